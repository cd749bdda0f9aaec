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
    /// Verified tokens by secret hash, kept briefly so a busy client is not one database read
    /// per request; a revocation takes effect within `cacheTTL`.
    private let cache = Mutex<[String: (token: AccessToken?, until: ContinuousClock.Instant)]>([:])
    private let activeTokens = Mutex<(count: Int, until: ContinuousClock.Instant)?>(nil)
    static let cacheTTL = Duration.seconds(2)

    public init(tokens: any TokenStore) { self.tokens = tokens }

    public func authorize(_ request: Request, context: GatehouseContext, scope: Scope) async throws -> Principal {
        try await authorize(request, context: context, anyOf: [scope])
    }

    /// Accepts a token holding any one of `scopes` (reading a gate is open to those who open
    /// gates and those who decide them).
    public func authorize(_ request: Request, context: GatehouseContext, anyOf scopes: [Scope]) async throws -> Principal {
        let scope = scopes[0]
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else {
                throw Problem.unauthorized("the Authorization header must be \"Bearer <token>\"")
            }
            guard let token = try await token(for: String(parts[1]).trimmingCharacters(in: .whitespaces)) else {
                throw Problem.unauthorized("the token is unknown or revoked")
            }
            guard scopes.contains(where: token.scopes.grants) else {
                throw Problem.forbidden("the token \"\(token.name)\" lacks the scope \(scopes.map(\.rawValue).joined(separator: " or ")) (it has \(token.scopes.map(\.rawValue).joined(separator: ", ")))")
            }
            return .token(token)
        }
        if try await activeTokenCount() == 0 {
            guard context.isLoopbackPeer else {
                throw Problem.unauthorized("this server has no tokens yet and answers only on loopback; create one with `gatehouse token create`")
            }
            return .local
        }
        throw Problem.unauthorized("a bearer token with the scope \(scope.rawValue) is required")
    }

    /// A token pasted into a web login form.
    public func verify(secret: String) async throws -> AccessToken? { try await token(for: secret) }

    /// Whether any token exists (protected mode is off).
    public func hasTokens() async throws -> Bool { try await activeTokenCount() > 0 }

    private func token(for secret: String) async throws -> AccessToken? {
        let hash = AccessToken.hash(secret)
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[hash] }), cached.until > now { return cached.token }
        let token = try await tokens.verify(secret: secret)
        cache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[hash] = (token, now + Self.cacheTTL)
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
