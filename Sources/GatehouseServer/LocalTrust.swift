import HTTPTypes

/// What protected mode (no tokens: the loopback caller is trusted, docs/api.md, Access) must not
/// trust. A browser on this machine is on loopback too, and it runs whatever page its user
/// opens; two things tell such a page's request from the user's own tools:
/// - its `Host`: a DNS-rebinding page reaches 127.0.0.1 under its own name, so only a loopback
///   name is trusted — 127.x.x.x, `[::1]`, `localhost` and `*.localhost` (which browsers never
///   resolve elsewhere) — or no `Host` at all, which no browser sends;
/// - what the browser says of where a request comes from: `Sec-Fetch-Site` other than
///   `same-origin` (the console's own pages) or `none` (the user's own doing) is refused but
///   for a link followed to a console page; and for a change, from a browser too old for that
///   header, an `Origin` naming another host. A cross-site form (`text/plain` or a form
///   encoding) needs no preflight, so without this any page could silence every alert or
///   decide a gate. The CLI, the SDK and curl send neither header.
/// A request relayed by a reverse proxy (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) is not
/// the local user's either.
enum LocalTrust {
    /// Why `head` may not act as the local user; nil when it may.
    static func refusal(_ head: HTTPRequest) -> String? {
        // A reverse proxy on this machine is a loopback peer, but its clients are anyone's.
        if let header = forwarded.first(where: { head.headerFields[$0] != nil }) {
            return "this server has no tokens and trusts only callers on this machine, not a request relayed by a proxy (\(header)); create a token with `gatehouse token create`"
        }
        if let authority = head.authority, !isLoopbackName(authority) {
            return "this server has no tokens and trusts only requests addressed to a loopback name (127.0.0.1, [::1], localhost), not \(authority); create a token with `gatehouse token create` to serve other names"
        }
        let fields = head.headerFields
        if let site = fields[secFetchSite]?.lowercased(), site != "same-origin", site != "none" {
            // A link followed from elsewhere (a chat message, another tool's page) to one of the
            // console's pages is the user's own doing. Anything else another site's page makes
            // the browser send — a form, a fetch, an image — is refused, reads included:
            // `GET /v1/datasets/{name}/next` leases an item, a stream holds a connection.
            let navigation = (head.method == .get || head.method == .head) && fields[secFetchMode]?.lowercased() == "navigate"
                && fields[secFetchDest]?.lowercased() == "document" && !isAPI(head.path ?? "")
            if !navigation {
                return "this server has no tokens, so a request from another site's page (Sec-Fetch-Site: \(site)) is refused: make it from this server's own pages, the CLI or the API"
            }
        }
        guard head.method != .get, head.method != .head else { return nil }
        if let origin = fields[.origin]?.lowercased(), fields[secFetchSite] == nil {
            let host = head.authority?.lowercased() ?? ""
            if origin != "http://\(host)" && origin != "https://\(host)" {
                return "this server has no tokens, so a change from another origin (\(origin)) is refused: make it from this server's own pages, the CLI or the API"
            }
        }
        return nil
    }

    /// Whether a path is the API's, as the router reads it: it drops empty segments, so
    /// `//v1/…` is `/v1/…` too.
    static func isAPI(_ path: String) -> Bool {
        path.split(separator: "?", maxSplits: 1).first.map { $0.split(separator: "/").first == "v1" } ?? false
    }

    static let secFetchSite = HTTPField.Name("Sec-Fetch-Site")!
    static let secFetchMode = HTTPField.Name("Sec-Fetch-Mode")!
    static let secFetchDest = HTTPField.Name("Sec-Fetch-Dest")!
    /// Set by a reverse proxy: the request came from elsewhere through it (see `refusal`).
    static let forwarded = [HTTPField.Name("Forwarded")!, HTTPField.Name("X-Forwarded-For")!, HTTPField.Name("X-Real-IP")!]
    /// The fields `refusal` reads besides `Host`: a request with none of them is refused only
    /// for its `Host` (what the events fast path relies on, asking `isLoopbackName` alone).
    static let fieldsBeyondHost: [HTTPField.Name] = forwarded + [secFetchSite, secFetchMode, secFetchDest, .origin]

    /// Whether a `Host` value (with or without a port) names this machine's loopback interface.
    static func isLoopbackName(_ authority: String) -> Bool {
        var host = Substring(authority.lowercased())
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let rest = host[host.index(after: close)...]
            guard rest.isEmpty || (rest.first == ":" && rest.dropFirst().allSatisfy(\.isNumber)) else { return false }
            return host[host.index(after: host.startIndex)..<close] == "::1"
        }
        if let colon = host.lastIndex(of: ":") {
            guard host[host.index(after: colon)...].allSatisfy(\.isNumber) else { return false }
            host = host[..<colon]
        }
        if host.hasSuffix(".") { host = host.dropLast() }
        if host == "localhost" || host.hasSuffix(".localhost") { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { part in
            !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isASCII) && part.allSatisfy(\.isNumber) && Int(part).map { $0 <= 255 } == true
        }
    }
}
