import GatehouseCore
import Hummingbird
import NIOCore

/// What the server-rendered pages share: security headers, a bare message page, cookies.
enum WebPage {
    /// No framing, no referrer (URLs may carry link tokens), no caching; scripts only from
    /// this server when the page has any, images from the web when it shows items.
    static func headers(scripts: Bool = false, images: Bool = false, connect: Bool = false) -> HTTPFields {
        var csp = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        if scripts { csp += "; script-src 'self'" }
        // The console's script follows the event stream and reloads its own page: this server only.
        if connect { csp += "; connect-src 'self'" }
        if images { csp += "; img-src https: http:" }
        return [
            .contentType: "text/html; charset=utf-8",
            .contentSecurityPolicy: csp,
            HTTPFields.Element.Name("X-Frame-Options")!: "DENY",
            HTTPFields.Element.Name("Referrer-Policy")!: "no-referrer",
            .cacheControl: "no-store",
        ]
    }

    /// A minimal page for errors and refusals (no template needed).
    static func message(_ status: HTTPResponse.Status, _ text: String) -> Response {
        let html = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Gatehouse</title></head><body><main><h1>Gatehouse</h1><p>\(Markdown.escape(text))</p></main></body></html>\n"
        return Response(status: status, headers: headers(), body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// After a form: on to `location` (a path on this server), maybe setting a cookie.
    static func redirect(_ location: String, setCookie: String? = nil) -> Response {
        var headers: HTTPFields = [.location: location, .cacheControl: "no-store"]
        if let setCookie { headers[.setCookie] = setCookie }
        return Response(status: .seeOther, headers: headers)
    }

    /// A cookie's value from the request.
    static func cookie(_ name: String, in request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let kv = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if kv.count == 2, kv[0] == name { return String(kv[1]) }
            }
        }
        return nil
    }

    /// Where a form may send the browser next: a path on this server, or nil. Control
    /// characters are removed first (browsers drop tabs and newlines inside URLs, so
    /// `/<TAB>/evil.example` would become `//evil.example`); then only a path starting with a
    /// single `/` passes — `//host` and `/\host` are read by browsers as another origin.
    static func sameOriginPath(_ given: String?) -> String? {
        guard let given else { return nil }
        let path = ControlCharacters.removing(from: given)
        guard path.hasPrefix("/"), !path.hasPrefix("//"), !path.hasPrefix("/\\") else { return nil }
        return path
    }
}
