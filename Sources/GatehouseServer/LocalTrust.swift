import HTTPTypes

/// What protected mode (no tokens: the loopback caller is trusted, docs/api.md, Access) must not
/// trust. A browser on this machine is on loopback too, and it runs whatever page its user
/// opens; two things tell such a page's request from the user's own tools:
/// - its `Host`: a DNS-rebinding page reaches 127.0.0.1 under its own name, so only a loopback
///   name is trusted — 127.x.x.x, `[::1]`, `localhost` and `*.localhost` (which browsers never
///   resolve elsewhere) — or no `Host` at all, which no browser sends;
/// - for a change (anything but GET and HEAD), what the browser says of where it comes from:
///   `Sec-Fetch-Site` other than `same-origin` (the console's own pages) or `none` (the user's
///   own doing), or, from a browser too old for that header, an `Origin` naming another host.
///   A cross-site form (`text/plain` or a form encoding) needs no preflight, so without this
///   any page could silence every alert or decide a gate. The CLI, the SDK and curl send
///   neither header.
enum LocalTrust {
    /// Why `head` may not act as the local user; nil when it may.
    static func refusal(_ head: HTTPRequest) -> String? {
        if let authority = head.authority, !isLoopbackName(authority) {
            return "this server has no tokens and trusts only requests addressed to a loopback name (127.0.0.1, [::1], localhost), not \(authority); create a token with `gatehouse token create` to serve other names"
        }
        guard head.method != .get, head.method != .head else { return nil }
        if let site = head.headerFields[secFetchSite]?.lowercased(), site != "same-origin", site != "none" {
            return "this server has no tokens, so a change from another site's page (Sec-Fetch-Site: \(site)) is refused: make it from this server's own pages, the CLI or the API"
        }
        if let origin = head.headerFields[.origin]?.lowercased(), head.headerFields[secFetchSite] == nil {
            let host = head.authority?.lowercased() ?? ""
            if origin != "http://\(host)" && origin != "https://\(host)" {
                return "this server has no tokens, so a change from another origin (\(origin)) is refused: make it from this server's own pages, the CLI or the API"
            }
        }
        return nil
    }

    static let secFetchSite = HTTPField.Name("Sec-Fetch-Site")!

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
