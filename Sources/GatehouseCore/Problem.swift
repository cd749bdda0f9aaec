/// One invalid field of one item: `{"index": 3, "field": "pipeline", "detail": "is required"}`.
public struct FieldError: Error, Sendable, Equatable, CustomStringConvertible {
    public var index: Int?
    public var line: Int?
    public var field: String
    public var detail: String

    public init(index: Int? = nil, line: Int? = nil, field: String, detail: String) {
        self.index = index
        self.line = line
        self.field = field
        self.detail = detail
    }

    public var description: String {
        var where_ = ""
        if let line { where_ = "line \(line): " } else if let index { where_ = "item \(index): " }
        return "\(where_)\(field) \(detail)"
    }
}

/// An RFC 9457 problem. Every error the API returns is one of these, as
/// `application/problem+json`; `detail` always names what was wrong.
public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var title: String
    public var detail: String
    public var type: String
    public var errors: [FieldError]
    /// Extra members (for example the outcome of an already-closed gate).
    public var extensions: JSONObject
    /// For a 503: the seconds a client should wait before trying again (`Retry-After`).
    public var retryAfterSeconds = 1

    public init(status: Int, title: String, detail: String, type: String? = nil, errors: [FieldError] = [], extensions: JSONObject = JSONObject()) {
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type ?? "about:blank"
        self.errors = errors
        self.extensions = extensions
    }

    public var description: String { "\(status) \(title): \(detail)" }

    public static func badRequest(_ detail: String) -> Problem { Problem(status: 400, title: "Bad Request", detail: detail) }
    public static func notFound(_ detail: String) -> Problem { Problem(status: 404, title: "Not Found", detail: detail) }
    public static func unauthorized(_ detail: String) -> Problem { Problem(status: 401, title: "Unauthorized", detail: detail) }
    public static func forbidden(_ detail: String) -> Problem { Problem(status: 403, title: "Forbidden", detail: detail) }
    public static func tooLarge(_ detail: String) -> Problem { Problem(status: 413, title: "Content Too Large", detail: detail) }
    public static func unsupportedMediaType(_ detail: String) -> Problem { Problem(status: 415, title: "Unsupported Media Type", detail: detail) }
    public static func unavailable(_ detail: String) -> Problem { Problem(status: 503, title: "Service Unavailable", detail: detail) }
    public static func internalError(_ detail: String) -> Problem { Problem(status: 500, title: "Internal Server Error", detail: detail) }

    /// 422 naming every invalid field; `detail` spells out the first ones so a human reading only
    /// the one-line message (the CLI prints it) still sees what to fix.
    public static func invalid(_ errors: [FieldError]) -> Problem {
        let shown = errors.prefix(3).map(\.description).joined(separator: "; ")
        let more = errors.count > 3 ? " (and \(errors.count - 3) more)" : ""
        return Problem(status: 422, title: "Unprocessable Content", detail: shown + more, errors: errors)
    }

    public var json: JSONValue {
        var object = JSONObject()
        object.append("type", .string(type))
        object.append("title", .string(title))
        object.append("status", .int(status))
        object.append("detail", .string(detail))
        if !errors.isEmpty {
            object.append("errors", .array(errors.map { error in
                var e = JSONObject()
                if let index = error.index { e.append("index", .int(index)) }
                if let line = error.line { e.append("line", .int(line)) }
                e.append("field", .string(error.field))
                e.append("detail", .string(error.detail))
                return .object(e)
            }))
        }
        for (key, value) in extensions { object[key] = value }
        return .object(object)
    }

    /// Reads a problem back (the CLI does, to print `detail`).
    public init?(json: JSONValue) {
        guard let object = json.objectValue, let status = object["status"]?.doubleValue else { return nil }
        self.init(
            status: Int(status),
            title: object["title"]?.stringValue ?? "",
            detail: object["detail"]?.stringValue ?? "",
            type: object["type"]?.stringValue
        )
        self.errors = (object["errors"]?.arrayValue ?? []).compactMap { value in
            guard let e = value.objectValue else { return nil }
            return FieldError(
                index: e["index"]?.doubleValue.map { Int($0) }, line: e["line"]?.doubleValue.map { Int($0) },
                field: e["field"]?.stringValue ?? "", detail: e["detail"]?.stringValue ?? "")
        }
    }
}

/// Everything wrong with one item.
public struct InvalidEvent: Error, Sendable, Equatable {
    public var errors: [FieldError]
    public init(_ errors: [FieldError]) { self.errors = errors }
}
