import Foundation
import GatehouseCore

/// Why a client command failed, with the exit code the CLI uses for it (sysexits-style, so
/// scripts can tell "fix your input" from "the server is down").
public struct ClientFailure: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var exitCode: Int32
    public var status: Int?
    /// The answer's `Retry-After`, in seconds (a `503` or `429`), when it gave one.
    public var retryAfter: Double?
    public init(_ message: String, exitCode: Int32, status: Int? = nil, retryAfter: Double? = nil) {
        self.message = message
        self.exitCode = exitCode
        self.status = status
        self.retryAfter = retryAfter
    }

    /// How long a loop that retries this failure should wait before its next try: what the
    /// server asked for (a full disk asks 30 s, a locked database 1 s), at least `floor`, and
    /// never past `deadline`.
    public func pause(floor: Double = 0.5, until deadline: Date?) -> Double {
        let wanted = max(floor, retryAfter ?? floor)
        guard let deadline else { return wanted }
        return max(0, min(wanted, deadline.timeIntervalSinceNow))
    }
    public var description: String { message }

    public enum Code {
        public static let notFound: Int32 = 1
        public static let usage: Int32 = 64
        public static let rejected: Int32 = 65
        public static let noInput: Int32 = 66
        public static let unavailable: Int32 = 69
        public static let serverError: Int32 = 70
        public static let unauthorized: Int32 = 77
        public static let config: Int32 = 78
    }

    /// Maps an HTTP error answer to a failure, using the problem's `detail` as the message.
    public static func from(status: Int, body: [UInt8], headers: [(name: String, value: String)] = []) -> ClientFailure {
        var message = "the server answered \(status)"
        if let json = try? JSONValue.parse(bytes: body), let problem = Problem(json: json) {
            message = problem.detail.isEmpty ? problem.title : problem.detail
        }
        let code: Int32 = switch status {
        case 401, 403: Code.unauthorized
        case 404: Code.notFound
        case 500...: Code.serverError
        default: Code.rejected
        }
        // Delta-seconds only: the server sends no HTTP dates here.
        let retryAfter = headers.last { $0.name.lowercased() == "retry-after" }.flatMap { Double($0.value.trimmingCharacters(in: .whitespaces)) }
            .flatMap { $0.isFinite && $0 >= 0 ? min($0, 3_600) : nil }
        return ClientFailure(message, exitCode: code, status: status, retryAfter: retryAfter)
    }
}

/// One URL path segment or query value, percent-encoded: everything outside RFC 3986's
/// unreserved characters (letters, digits, `-._~`) is escaped, so a run named `a b`, `a/b` or
/// `a?b` stays one segment and the server decodes it back exactly.
public func percentEncode(_ s: String) -> String {
    s.addingPercentEncoding(withAllowedCharacters: unreserved) ?? s
}

private let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

/// The Gatehouse HTTP API as the CLI sees it.
public final class APIClient {
    public let server: String
    public let token: String?
    let http: HTTPClient

    public init(server: String, token: String?, timeout: Double = 30) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.token = token
        self.http = HTTPClient(connectTimeout: 5, timeout: timeout)
    }

    public var authHeaders: [String: String] {
        token.map { ["Authorization": "Bearer \($0)"] } ?? [:]
    }

    /// Sends a request and returns the parsed JSON answer of a 2xx; anything else throws.
    public func call(_ method: String, _ path: String, body: [UInt8]? = nil, contentType: String = "application/json") throws -> JSONValue {
        var headers = authHeaders
        headers["Accept"] = "application/json"
        headers["User-Agent"] = "gatehouse-cli/1"
        if body != nil { headers["Content-Type"] = contentType }
        let result: HTTPResult
        do {
            result = try http.send(method: method, url: server + path, headers: headers, body: body)
        } catch let error as HTTPClientError {
            throw ClientFailure("cannot reach the server at \(server): \(error)", exitCode: ClientFailure.Code.unavailable)
        }
        guard (200..<300).contains(result.status) else { throw ClientFailure.from(status: result.status, body: result.body, headers: result.headers) }
        if result.body.isEmpty { return .null }
        do {
            return try JSONValue.parse(bytes: result.body)
        } catch {
            throw ClientFailure("the server answered with invalid JSON: \(error)", exitCode: ClientFailure.Code.serverError)
        }
    }

    /// Follows `/v1/events/stream`, reconnecting with `Last-Event-ID` when the connection
    /// drops, and hands each event to `onEvent` (return false to stop).
    public func followEvents(query: String, from cursor: String?, onEvent: @escaping (_ id: String, _ data: JSONValue) -> Bool) throws {
        var lastID = cursor
        var parser = SSEParser()
        var stop = false
        var failures = 0
        while !stop {
            var headers = authHeaders
            headers["Accept"] = "text/event-stream"
            if let lastID { headers["Last-Event-ID"] = lastID }
            do {
                let result = try http.stream(url: server + "/v1/events/stream" + query, headers: headers) { bytes in
                    for message in parser.feed(bytes) {
                        if let id = message.id { lastID = id }
                        guard let json = try? JSONValue.parse(message.data) else { continue }
                        if !onEvent(message.id ?? "", json) { stop = true; return false }
                    }
                    failures = 0
                    return true
                }
                if result.status == 503 {
                    // The server is stopping, or keeps no more streams just now: come back
                    // when it says (the README promises `events tail` reconnects on its own).
                    failures += 1
                    if failures > 30 { throw ClientFailure.from(status: result.status, body: result.body) }
                    parser = SSEParser()
                    Thread.sleep(forTimeInterval: min(max(result.header("Retry-After").flatMap(Double.init) ?? 2, 0.2), 30))
                    continue
                }
                if !(200..<300).contains(result.status) && result.status != 0 {
                    throw ClientFailure.from(status: result.status, body: result.body)
                }
            } catch let error as HTTPClientError {
                failures += 1
                if failures > 30 { throw ClientFailure("lost the server at \(server): \(error)", exitCode: ClientFailure.Code.unavailable) }
            }
            parser = SSEParser()
            if !stop { Thread.sleep(forTimeInterval: min(0.2 * Double(failures + 1), 2)) }
        }
    }
}

/// Incremental Server-Sent Events parser (the WHATWG rules that matter here).
public struct SSEParser {
    public struct Message: Equatable {
        public var id: String?
        public var event: String?
        public var data: String
    }
    private var buffer: [UInt8] = []
    private var id: String?
    private var event: String?
    private var data: [String] = []

    public init() {}

    public mutating func feed(_ bytes: [UInt8]) -> [Message] {
        buffer.append(contentsOf: bytes)
        var messages: [Message] = []
        while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
            var lineBytes = buffer[..<newline]
            if lineBytes.last == UInt8(ascii: "\r") { lineBytes = lineBytes.dropLast() }
            let line = String(decoding: lineBytes, as: UTF8.self)
            buffer.removeSubrange(...newline)
            if line.isEmpty {
                if !data.isEmpty { messages.append(Message(id: id, event: event, data: data.joined(separator: "\n"))) }
                data = []
                event = nil
                continue
            }
            if line.hasPrefix(":") { continue }
            let field: Substring, value: Substring
            if let colon = line.firstIndex(of: ":") {
                field = line[..<colon]
                var v = line[line.index(after: colon)...]
                if v.hasPrefix(" ") { v = v.dropFirst() }
                value = v
            } else {
                field = Substring(line)
                value = ""
            }
            switch field {
            case "id": id = String(value)
            case "event": event = String(value)
            case "data": data.append(String(value))
            default: break
            }
        }
        return messages
    }
}
