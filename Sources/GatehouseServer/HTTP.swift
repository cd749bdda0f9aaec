import GatehouseCore
import Hummingbird
import NIOCore

extension Response {
    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        var text = value.serialized()
        text += "\n"
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// A typed body, through `JSONValueEncoder` (declared key order, free-form fields as given).
    static func json<Body: Encodable>(encoding body: Body, status: HTTPResponse.Status = .ok) -> Response {
        json(JSONValueEncoder.value(body), status: status)
    }

    static func problem(_ problem: Problem) -> Response {
        let (headers, text) = problemParts(problem)
        return Response(status: HTTPResponse.Status(code: problem.status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// The headers and body of a problem's answer (also written by `EventsFastPath`).
    static func problemParts(_ problem: Problem) -> (HTTPFields, String) {
        var headers: HTTPFields = [.contentType: "application/problem+json"]
        if problem.status == 401 { headers[.wwwAuthenticate] = "Bearer realm=\"gatehouse\"" }
        // A busy or draining server: clients' retry logic waits this long before trying again.
        if problem.status == 503 { headers[.retryAfter] = String(problem.retryAfterSeconds) }
        return (headers, problem.json.serialized() + "\n")
    }
}

extension Request {
    func query(_ name: String) -> String? {
        uri.queryParameters[Substring(name)].map(String.init).flatMap { $0.isEmpty ? nil : $0 }
    }

    func queryAll(_ name: String) -> [String] {
        uri.queryParameters.getAll(name).flatMap { $0.split(separator: ",").map { String($0) } }.filter { !$0.isEmpty }
    }

    /// An integer query parameter within bounds, or a 422 naming it.
    func intQuery(_ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = query(name) else { return value }
        guard let n = Int(text), range.contains(n) else {
            throw Problem.invalid([FieldError(field: name, detail: "must be an integer in \(range.lowerBound)...\(range.upperBound) (got \"\(text)\")")])
        }
        return n
    }

    func cursorQuery(_ name: String) throws -> Int64? {
        guard let text = query(name) else { return nil }
        guard let n = Int64(text), n >= 0 else {
            throw Problem.invalid([FieldError(field: name, detail: "must be a cursor returned by the API (got \"\(text)\")")])
        }
        return n
    }

    /// Reads the whole body, refusing more than `limit` bytes with 413 before reading it all
    /// when the client announced its length.
    mutating func bodyBytes(limit: Int) async throws -> [UInt8] {
        if let declared = headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            throw Problem.tooLarge("the request body is \(declared) bytes; the limit is \(limit) bytes (server.max_body)")
        }
        do {
            return Array(try await body.collect(upTo: limit).readableBytesView)
        } catch {
            throw Self.bodyReadFailure(error, limit: limit, setting: "server.max_body")
        }
    }

    /// What a failed body read answers. Too large (a chunked body has no Content-Length to
    /// refuse up front) is `413`. A body that stopped short — the client closed before
    /// sending all it announced, or sent a malformed chunk — is the client's fault, `400`,
    /// not a server error (most likely nobody is left to read it).
    static func bodyReadFailure(_ error: any Error, limit: Int, setting: String) -> any Error {
        switch error {
        case is Problem, is CancellationError: return error
        case is NIOTooManyBytesError: break
        case let error as HTTPError where error.status == .contentTooLarge: break
        default: return Problem.badRequest("the request body ended before it was complete (\(error))")
        }
        return Problem.tooLarge("the request body is larger than the limit of \(limit) bytes (\(setting))")
    }

    /// The body as a JSON object: `400` for unreadable JSON (with line and column), `422` for
    /// anything but an object, `415` for a non-JSON content type; an empty body is `{}` when
    /// `allowEmpty` (actions whose fields are all optional).
    mutating func jsonObject(limit: Int, allowEmpty: Bool = false) async throws -> JSONObject {
        let bytes = try await bodyBytes(limit: limit)
        if allowEmpty, bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return JSONObject() }
        if let type = headers[.contentType], !type.lowercased().hasPrefix("application/json") {
            throw Problem.unsupportedMediaType("send application/json (got \(type))")
        }
        let value: JSONValue
        do { value = try JSONValue.parse(bytes: bytes) } catch {
            throw Problem.badRequest("the body is not valid JSON: \(error.message) at line \(error.line), column \(error.column)")
        }
        guard let object = value.objectValue else { throw Problem.invalid([FieldError(field: "(body)", detail: "must be a JSON object")]) }
        return object
    }
}
