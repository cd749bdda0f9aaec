import Foundation
import GatehouseCore
import GatehouseServices
import GatehouseStore
import Hummingbird
import Synchronization

/// Checks every API request against docs/api.md (Access): a bearer token with the route's scope, or —
/// while no token exists — a caller on the loopback interface (protected mode).
public final class Authenticator: Sendable {
    let tokens: any TokenStore
    /// Verified tokens by secret hash (and sessions' tokens by id), kept briefly so a busy client
    /// is not one database read per request; a revocation takes effect within `cacheTTL`.
    private let cache = Mutex<[String: (token: AccessToken?, until: ContinuousClock.Instant)]>([:])
    private let activeTokens = Mutex<(count: Int, until: ContinuousClock.Instant)?>(nil)
    static let cacheTTL = Duration.seconds(2)

    /// Signs web sessions; nil: no sessions (the API alone).
    let signer: LinkSigner?
    /// The cookie that holds a web session, and how long a sign-in lasts.
    public static let sessionCookie = "gatehouse_who"
    public static let sessionLifetime: Int64 = 12 * 3_600_000

    public init(tokens: any TokenStore, signer: LinkSigner? = nil) {
        self.tokens = tokens
        self.signer = signer
    }

    /// The person signed in on this browser, and as whom they act: their token (its scopes;
    /// revoking it signs them out within `cacheTTL`) or — on a server without tokens, from
    /// loopback — the local user. Nil when nobody is signed in, the session expired, its token
    /// is revoked, or it was a sign-in by name and tokens exist now.
    public func person(_ request: Request, context: GatehouseContext) async throws -> (identity: String, principal: Principal)? {
        guard let signer, let cookie = WebPage.cookie(Self.sessionCookie, in: request), let session = signer.verifySession(cookie),
              let identity = Identity.web(session.name) else { return nil }
        if let id = session.tokenID {
            guard let token = try await sessionToken(id: id) else { return nil }
            return (identity.description, .token(token))
        }
        guard try await activeTokenCount() == 0, context.isLoopbackPeer, LocalTrust.refusal(request.head) == nil else { return nil }
        return (identity.description, .local)
    }

    /// Whether a browser says this request comes from this server's own pages. The cookie goes
    /// with requests from any port of the host and any sibling site (SameSite=Lax), so "not
    /// cross-site" is not enough: `Sec-Fetch-Site` must say `same-origin`, or — from a browser
    /// too old to send it — `Origin` must name this host.
    static func isSameOrigin(_ request: Request) -> Bool {
        if let site = request.headers[.init("Sec-Fetch-Site")!] { return site.lowercased() == "same-origin" }
        guard let origin = request.headers[.init("Origin")!], let host = request.head.authority else { return false }
        return origin.lowercased() == "http://\(host.lowercased())" || origin.lowercased() == "https://\(host.lowercased())"
    }

    /// The `Set-Cookie` value that signs `name` in (with `token` when they gave one).
    public func signIn(name: String, token: AccessToken?, now: Timestamp = .now()) -> String? {
        guard let signer else { return nil }
        let value = signer.session(.init(name: name, tokenID: token?.id, expires: now.adding(milliseconds: Self.sessionLifetime)))
        return "\(Self.sessionCookie)=\(value); Path=/; Max-Age=\(Self.sessionLifetime / 1000); HttpOnly; SameSite=Lax"
    }

    /// Ends the session in this browser.
    public static let signOut = "\(sessionCookie)=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"

    private func sessionToken(id: String) async throws -> AccessToken? {
        try await cachedToken(key: "id:" + id) { try await tokens.active(id: id) }
    }

    public func authorize(_ request: Request, context: GatehouseContext, scope: Scope) async throws -> Principal {
        try await authorize(request, context: context, anyOf: [scope])
    }

    /// Accepts a token holding any one of `scopes` (reading a gate is open to those who open
    /// gates and those who decide them).
    public func authorize(_ request: Request, context: GatehouseContext, anyOf scopes: [Scope]) async throws -> Principal {
        let scope = scopes[0]
        if let header = request.headers[.authorization] {
            guard let secret = Self.bearerSecret(header) else {
                throw Problem.unauthorized("the Authorization header must be \"Bearer <token>\"")
            }
            guard let token = try await token(for: secret) else {
                throw Problem.unauthorized("the token is unknown or revoked")
            }
            guard scopes.contains(where: token.scopes.grants) else {
                throw Problem.forbidden("the token \"\(token.name)\" lacks the scope \(scopes.map(\.rawValue).joined(separator: " or ")) (it has \(token.scopes.map(\.rawValue).joined(separator: ", ")))")
            }
            return .token(token)
        }
        // The console's own scripts call the API with the person's session: their token's
        // scopes apply. A cookie goes with any request to this server, so a change through it
        // is refused when the browser says it came from another site (SameSite=Lax already
        // keeps the cookie off such posts in current browsers).
        if let (_, principal) = try await person(request, context: context), case .token(let token) = principal {
            if request.method != .get, request.method != .head, !Self.isSameOrigin(request) {
                throw Problem.forbidden("a signed-in session may change things only from this server's own pages")
            }
            guard scopes.contains(where: token.scopes.grants) else {
                throw Problem.forbidden("\(token.name) (signed in) lacks the scope \(scopes.map(\.rawValue).joined(separator: " or "))")
            }
            return principal
        }
        if try await activeTokenCount() == 0 {
            guard context.isLoopbackPeer else {
                throw Problem.unauthorized("this server has no tokens yet and answers only on loopback; create one with `gatehouse token create`")
            }
            if let refusal = LocalTrust.refusal(request.head) { throw Problem.forbidden(refusal) }
            return .local
        }
        throw Problem.unauthorized("a bearer token with the scope \(scope.rawValue) is required")
    }

    /// Whether `authorize` would let the request act with `scope`, said from what is cached
    /// alone — for the front end's fast path, which answers without a task. False when the
    /// cache cannot say (a token not seen within `cacheTTL`, a session cookie, the token count
    /// not read lately) and when the answer is a refusal: the request then takes the full
    /// path, which reads what it needs, caches it, and words any refusal.
    func allowsFromCache(authorization: String?, hasCookie: Bool, isLoopbackPeer: Bool, trustedAsLocal: Bool, scope: Scope) -> Bool {
        let now = ContinuousClock.now
        if let authorization {
            guard let secret = Self.bearerSecret(authorization) else { return false }
            let key = "hash:" + AccessToken.hash(secret)
            guard let cached = cache.withLock({ $0[key] }), cached.until > now, let token = cached.token else { return false }
            return token.scopes.grants(scope)
        }
        // A session cookie may carry a token's scopes, or refuse a change from another site.
        guard !hasCookie, isLoopbackPeer, trustedAsLocal, let count = activeTokens.withLock({ $0 }), count.until > now else { return false }
        return count.count == 0
    }

    /// The secret of an `Authorization: Bearer <token>` header; nil for any other form.
    static func bearerSecret(_ header: String) -> String? {
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1]).trimmingCharacters(in: .whitespaces)
    }

    /// A token pasted into a web login form.
    public func verify(secret: String) async throws -> AccessToken? { try await token(for: secret) }

    /// Whether any token exists (protected mode is off).
    public func hasTokens() async throws -> Bool { try await activeTokenCount() > 0 }

    private func token(for secret: String) async throws -> AccessToken? {
        try await cachedToken(key: "hash:" + AccessToken.hash(secret)) { try await tokens.verify(secret: secret) }
    }

    /// A token looked up by secret hash or by id (a session), remembered for `cacheTTL`: a
    /// revocation takes effect within that, and a busy client is not a read per request.
    private func cachedToken(key: String, load: () async throws -> AccessToken?) async throws -> AccessToken? {
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[key] }), cached.until > now { return cached.token }
        let token = try await load()
        cache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[key] = (token, now + Self.cacheTTL)
        }
        return token
    }

    private func activeTokenCount() async throws -> Int {
        let now = ContinuousClock.now
        if let cached = activeTokens.withLock({ $0 }), cached.until > now { return cached.count }
        let count = try await tokens.activeCount()
        activeTokens.withLock { $0 = (count, now + Self.cacheTTL) }
        return count
    }
}
