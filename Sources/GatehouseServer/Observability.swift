import Foundation
import GatehouseCore
import GatehouseStore
import Hummingbird
import Logging
import Metrics
import Synchronization

/// Outermost middleware: gives every answer a request id, renders every error as
/// `application/problem+json`, records the latency histogram and logs the request.
struct ObservabilityMiddleware: RouterMiddleware {
    typealias Context = GatehouseContext

    /// One histogram handle per (method, route, status), made once: asking the metrics
    /// factory on every request costs a lock and label strings each time.
    private static let timers = Mutex<[String: Metrics.Timer]>([:])

    static func timer(method: String, route: String, status: Int) -> Metrics.Timer {
        let key = "\(method) \(status) \(route)"
        if let timer = timers.withLock({ $0[key] }) { return timer }
        let timer = Metrics.Timer(
            label: "gatehouse_http_request_duration_seconds",
            dimensions: [("method", method), ("route", route), ("status", String(status))],
            preferredDisplayUnit: .seconds)
        timers.withLock { $0[key] = timer }
        return timer
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as HTTPError {
            let problem: Problem = switch error.status {
            case .notFound: .notFound("no route for \(request.method) \(request.uri.path)")
            case .methodNotAllowed: Problem(status: 405, title: "Method Not Allowed", detail: "\(request.method) is not allowed on \(request.uri.path)")
            case .contentTooLarge: .tooLarge(error.body ?? "the request body is too large")
            default: Problem(status: Int(error.status.code), title: error.status.reasonPhrase, detail: error.body ?? error.status.reasonPhrase)
            }
            response = .problem(problem)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            response = .problem(Self.problem(for: error, requestID: context.id, logger: context.logger))
        }
        response.headers[.init("X-Request-Id")!] = context.id
        // A refused body was not read: the rest of it cannot be told from a next request, so
        // the connection ends after this answer (CloseAfterResponseHandler).
        if response.status == .contentTooLarge { response.headers[.connection] = "close" }
        Self.record(
            method: request.method.rawValue, path: request.uri.path, route: context.endpointPath ?? "unmatched", status: response.status.code,
            elapsed: ContinuousClock.now - start, logger: context.logger)
        return response
    }

    /// What the client is told of an error a handler threw: a `Problem` as it is, anything
    /// else a 500 naming the request id (the error itself is logged, never shown).
    static func problem(for error: any Error, requestID: String, logger: Logger) -> Problem {
        if let problem = error as? Problem { return problem }
        if isLockTimeout(error) {
            logger.warning("the database stayed locked by another process", metadata: ["hb.request.id": .string(requestID)])
            return .unavailable("the database is locked by another process; nothing was changed, try again (request id \(requestID))")
        }
        if isStorageFull(error) {
            // Reads still work, so the server stays ready; writes fail until space is freed.
            logger.error("the database's disk is full: writes fail until space is freed", metadata: ["error": "\(error)", "hb.request.id": .string(requestID)])
            var problem = Problem.unavailable(
                "the server's disk is full; nothing was changed, try again once space is freed (request id \(requestID))")
            problem.retryAfterSeconds = 30
            return problem
        }
        logger.error("request failed", metadata: ["error": "\(error)", "hb.request.id": .string(requestID)])
        return .internalError("the server could not complete the request (request id \(requestID))")
    }

    /// Records an answered request: the latency histogram, and the log line.
    static func record(
        method: String, path: String, route: String, status: Int, elapsed: Duration, logger: Logger, extra: @autoclosure () -> Logger.Metadata = [:]
    ) {
        timer(method: method, route: route, status: status).recordNanoseconds(elapsed.nanoseconds)
        // Successful requests log at debug: at thousands of requests a second an info line per
        // request would cost more than the request — and so would building its metadata.
        let level: Logger.Level = status >= 500 ? .error : status >= 400 ? .info : .debug
        guard logger.logLevel <= level else { return }
        var metadata: Logger.Metadata = [
            "method": .string(method), "path": .string(path),
            "status": .stringConvertible(status), "ms": .string(String(format: "%.2f", Double(elapsed.nanoseconds) / 1e6)),
        ]
        metadata.merge(extra()) { old, _ in old }
        logger.log(level: level, "request", metadata: metadata)
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// One JSON object per line on stderr: what log shippers expect, and easy to grep.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var object = JSONObject()
        object.append("time", .string(Timestamp.now().rfc3339))
        object.append("level", .string(event.level.rawValue))
        object.append("message", .string(event.message.description))
        var merged = self.metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            // Hummingbird names its request id hb.request.id; logs say request_id.
            object.append(key == "hb.request.id" ? "request_id" : key, .string(value.description))
        }
        let line = JSONValue.object(object).serialized() + "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}

/// `time level message key=value…` for people reading a terminal.
public struct TextLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public init(label: String, level: Logger.Level) { self.logLevel = level }
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    public func log(event: LogEvent) {
        FileHandle.standardError.write(Data(Self.line(event, metadata: metadata, time: Timestamp.now()).utf8))
    }

    /// One line, whatever the values hold: a value with a space, `=`, a quote or a control
    /// character is quoted and escaped (logfmt), so a newline in a logged receiver reply or
    /// header cannot start a forged line of its own.
    static func line(_ event: LogEvent, metadata: Logger.Metadata, time: Timestamp) -> String {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let fields = merged.sorted(by: { $0.key < $1.key }).map {
            "\(quoted($0.key == "hb.request.id" ? "request_id" : $0.key))=\(quoted($0.value.description))"
        }.joined(separator: " ")
        return "\(time.rfc3339) \(event.level.rawValue.uppercased()) \(escaped(event.message.description)) \(fields)\n"
    }

    static func quoted(_ value: String) -> String {
        let plain = !value.isEmpty && !value.unicodeScalars.contains {
            $0 == " " || $0 == "=" || $0 == "\"" || $0 == "\\" || ControlCharacters.isControl($0) || isLineBreak($0)
        }
        return plain ? value : "\"" + escaped(value, quote: true) + "\""
    }

    /// Control characters (and, in a quoted value, `"` and `\\`) as escapes.
    static func escaped(_ text: String, quote: Bool = false) -> String {
        guard text.unicodeScalars.contains(where: { ControlCharacters.isControl($0) || isLineBreak($0) || (quote && ($0 == "\"" || $0 == "\\")) }) else {
            return text
        }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\"" where quote: out += "\\\""
            case "\\" where quote: out += "\\\\"
            default:
                if ControlCharacters.isControl(scalar) || isLineBreak(scalar) {
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    /// C1 controls (NEL among them: a line break; CSI drives a terminal) and the Unicode line
    /// and paragraph separators: terminals and log viewers act on these too.
    static func isLineBreak(_ scalar: Unicode.Scalar) -> Bool {
        (0x80...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }
}
