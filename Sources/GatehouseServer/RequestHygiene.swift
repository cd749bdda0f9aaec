import Foundation
import GatehouseCore
import Hummingbird

/// What every route may take for granted about a request, checked once here rather than in
/// each controller:
/// - path parameters are percent-decoded (`/v1/runs/a%20b` names the run `a b`), so no
///   handler compares an encoded segment with a stored name;
/// - a body declared in a charset other than UTF-8 is refused with `415`: every parser
///   behind this point reads UTF-8, and would otherwise store mojibake;
/// - no query parameter or path segment holds a NUL (`%00`): no name, id or filter can
///   contain one, and PostgreSQL refuses it in text outright (a `500` from a lookup). A
///   query parameter is a `422` naming it; a path segment names nothing that exists, `404`.
struct RequestHygieneMiddleware: RouterMiddleware {
    typealias Context = GatehouseContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let checked: Context
        do {
            checked = try check(request, context: context)
        } catch let problem as Problem where Self.wantsPage(request) {
            // A person's browser asked for a page (the console, a gate's page, labelling):
            // the refusal is a page too, not problem+json.
            let errors = problem.errors.map { "\($0.field) \($0.detail)" }.joined(separator: "; ")
            return WebPage.message(HTTPResponse.Status(code: problem.status), errors.isEmpty ? problem.detail : errors)
        }
        return try await next(request, checked)
    }

    /// A browser's page request: GET or HEAD outside the API whose `Accept` prefers HTML to
    /// JSON (`q` values honoured: `text/html;q=0` refuses it).
    static func wantsPage(_ request: Request) -> Bool {
        guard request.method == .get || request.method == .head, !request.uri.path.hasPrefix("/v1/") else { return false }
        var html = 0.0, json = 0.0
        for value in request.headers[values: .accept] {
            for range in value.split(separator: ",") {
                let parts = range.split(separator: ";")
                let type = parts.first.map { $0.trimmingASCIIWhitespace.lowercased() } ?? ""
                var q = 1.0
                for parameter in parts.dropFirst() {
                    let pair = parameter.split(separator: "=", maxSplits: 1)
                    if pair.count == 2, pair[0].trimmingASCIIWhitespace.lowercased() == "q" { q = Double(pair[1].trimmingASCIIWhitespace) ?? 0 }
                }
                switch type {
                case "text/html", "application/xhtml+xml": html = max(html, q)
                case "application/json", "application/problem+json": json = max(json, q)
                default: break
                }
            }
        }
        return html > 0 && html > json
    }

    /// The checks; the context with its path parameters decoded.
    private func check(_ request: Request, context: Context) throws -> Context {
        if let contentType = request.headers[.contentType], let charset = Self.charset(of: contentType), !Self.isUTF8(charset) {
            throw Problem.unsupportedMediaType("charset=\(charset) is not accepted: send UTF-8 (charset=utf-8, or no charset)")
        }
        for (name, value) in request.uri.queryParameters where value.utf8.contains(0) {
            throw Problem.invalid([FieldError(field: String(name), detail: "must not contain a NUL character")])
        }
        var context = context
        context.coreContext.parameters = try Self.decoded(context.parameters)
        return context
    }

    /// The `charset` parameter of a media type, unquoted; nil when there is none.
    static func charset(of contentType: String) -> String? {
        for parameter in contentType.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, pair[0].trimmingASCIIWhitespace.lowercased() == "charset" else { continue }
            return pair[1].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return nil
    }

    static func isUTF8(_ charset: String) -> Bool {
        let lower = charset.lowercased()
        return lower == "utf-8" || lower == "utf8"
    }

    /// Each parameter percent-decoded; a malformed escape (`%zz`, or bytes that are not
    /// UTF-8) is a `400` naming the segment.
    static func decoded(_ parameters: Parameters) throws -> Parameters {
        guard parameters.contains(where: { $0.value.contains("%") }) else { return parameters }
        var result = Parameters()
        for (key, value) in parameters {
            guard let text = String(value).removingPercentEncoding else {
                throw Problem.badRequest("the path segment \"\(value)\" is not valid percent-encoded UTF-8")
            }
            // Nothing is named with a NUL (names and ids refuse control characters), so there
            // is nothing there: 404, as for any other name that does not exist.
            if text.utf8.contains(0) { throw Problem.notFound("nothing is named with a NUL character (path segment \"\(value)\")") }
            result.append(key: key, value: Substring(text))
        }
        return result
    }
}
