import Foundation

public enum Severity: String, Sendable, CaseIterable, Codable, Comparable {
    case info, warning, error, critical

    private var rank: Int { Severity.allCases.firstIndex(of: self)! }
    public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
}

/// A pipeline lifecycle event, validated. `id` is always set: the sender's idempotency key, or
/// one Gatehouse generated.
public struct Event: Sendable, Equatable {
    public var id: String
    public var type: String
    public var pipeline: String
    public var run: String?
    public var step: String?
    public var severity: Severity
    public var summary: String?
    public var details: String?
    /// Sorted by key, so the stored form is canonical.
    public var labels: [(key: String, value: String)]
    public var attributes: JSONObject?
    public var url: String?
    public var time: Timestamp
    /// False when the sender gave no `time` and it is the time of receipt: then a re-sent
    /// event is the same content whatever its time (see `sameContent`).
    public var timeGiven = true

    public init(
        id: String, type: String, pipeline: String, run: String? = nil, step: String? = nil,
        severity: Severity? = nil, summary: String? = nil, details: String? = nil,
        labels: [(key: String, value: String)] = [], attributes: JSONObject? = nil, url: String? = nil,
        time: Timestamp
    ) {
        self.id = id
        self.type = type
        self.pipeline = pipeline
        self.run = run
        self.step = step
        self.severity = severity ?? Event.defaultSeverity(for: type)
        self.summary = summary
        self.details = details
        self.labels = labels.sorted { $0.key < $1.key }
        self.attributes = attributes
        self.url = url
        self.time = time
    }

    /// Whether `other` carries the same content as this event, the id aside: what tells a
    /// re-sent event (an idempotent duplicate) from a different event reusing its id. Times
    /// count only when both senders gave one.
    public func sameContent(as other: Event) -> Bool {
        guard type == other.type, pipeline == other.pipeline, run == other.run, step == other.step, severity == other.severity,
              summary == other.summary, details == other.details, labels.elementsEqual(other.labels, by: { $0 == $1 }),
              attributes == other.attributes, url == other.url, timeGiven == other.timeGiven
        else { return false }
        return !timeGiven || time == other.time
    }

    public static func defaultSeverity(for type: String) -> Severity { type.hasSuffix(".failed") ? .error : .info }

    public func label(_ name: String) -> String? { labels.first { $0.key == name }?.value }

    public static func == (a: Event, b: Event) -> Bool {
        a.id == b.id && a.type == b.type && a.pipeline == b.pipeline && a.run == b.run && a.step == b.step
            && a.severity == b.severity && a.summary == b.summary && a.details == b.details
            && a.labels.elementsEqual(b.labels, by: { $0 == $1 }) && a.attributes == b.attributes
            && a.url == b.url && a.time == b.time
    }

    /// The well-known types; any other dotted name is accepted too.
    public static let knownTypes = [
        "run.started", "run.succeeded", "run.failed", "step.started", "step.succeeded", "step.failed",
        "step.retried", "artifact.created", "model.registered", "model.promoted",
    ]
}

/// An event as stored: its place in the log (`cursor`) and when it was received.
public struct StoredEvent: Sendable, Equatable {
    public var cursor: Int64
    public var event: Event
    public var receivedAt: Timestamp

    public init(cursor: Int64, event: Event, receivedAt: Timestamp) {
        self.cursor = cursor
        self.event = event
        self.receivedAt = receivedAt
    }

    /// The API representation.
    public var json: JSONValue {
        var o = JSONObject()
        o.append("cursor", .string(String(cursor)))
        o.append("id", .string(event.id))
        o.append("type", .string(event.type))
        o.append("pipeline", .string(event.pipeline))
        if let run = event.run { o.append("run", .string(run)) }
        if let step = event.step { o.append("step", .string(step)) }
        o.append("severity", .string(event.severity.rawValue))
        if let summary = event.summary { o.append("summary", .string(summary)) }
        if let details = event.details { o.append("details", .string(details)) }
        var labels = JSONObject()
        for (k, v) in event.labels { labels.append(k, .string(v)) }
        o.append("labels", .object(labels))
        o.append("attributes", .object(event.attributes ?? JSONObject()))
        if let url = event.url { o.append("url", .string(url)) }
        o.append("time", .string(event.time.rfc3339))
        o.append("received_at", .string(receivedAt.rfc3339))
        return .object(o)
    }
}

/// Field limits (docs/api.md, Events).
public enum EventLimits {
    public static let idLength = 128
    public static let typeLength = 128
    public static let nameLength = 256
    public static let summaryLength = 1000
    public static let detailsLength = 20000
    public static let labelCount = 64
    public static let labelNameLength = 128
    public static let labelValueLength = 1024
    public static let attributesBytes = 64 * 1024
    public static let urlLength = 2048
}

/// Turns untrusted JSON into an `Event`, or into the list of what is wrong with it.
public struct EventValidator: Sendable {
    public var now: @Sendable () -> Timestamp
    public var makeID: @Sendable () -> String

    public init(now: @escaping @Sendable () -> Timestamp = { .now() }, makeID: @escaping @Sendable () -> String = { EventValidator.generateID() }) {
        self.now = now
        self.makeID = makeID
    }

    /// A time-ordered unique id: 12 hex digits of milliseconds then 20 random hex digits.
    public static func generateID() -> String {
        let ms = UInt64(max(0, Timestamp.now().milliseconds))
        var rng = PooledRandom()
        let r1 = rng.next() as UInt64
        let r2 = UInt64(rng.next() as UInt16)
        // "evt_" and 32 hex digits: the time's low 48 bits, then 80 random ones. Formatted in
        // place: every delivery's id is made this way, on the writer's thread.
        return String(unsafeUninitializedCapacity: 36) { out in
            for (i, c) in "evt_".utf8.enumerated() { out[i] = c }
            hex(ms, width: 12, into: out, at: 4)
            hex(r1, width: 16, into: out, at: 16)
            hex(r2, width: 4, into: out, at: 32)
            return 36
        }
    }

    /// The low `width` hex digits of `v` (lower case, zero-padded) at `out[at...]`.
    private static func hex(_ v: UInt64, width: Int, into out: UnsafeMutableBufferPointer<UInt8>, at start: Int) {
        let digits: StaticString = "0123456789abcdef"
        var v = v
        for i in stride(from: start + width - 1, through: start, by: -1) {
            out[i] = digits.utf8Start[Int(v & 0xf)]
            v >>= 4
        }
    }

    static let fields: Set<String> = ["id", "type", "pipeline", "run", "step", "severity", "summary", "details", "labels", "attributes", "url", "time"]

    /// Validates a plain Gatehouse event object. `index`/`line` locate it in a batch.
    public func validate(_ value: JSONValue, index: Int? = nil, line: Int? = nil) -> Result<Event, InvalidEvent> {
        guard case .object(let object) = value else {
            return .failure(InvalidEvent([FieldError(index: index, line: line, field: "(event)", detail: "must be a JSON object, got \(value.typeName)")]))
        }
        var errors: [FieldError] = []
        for key in object.keys where !Self.fields.contains(key) {
            errors.append(FieldError(index: index, line: line, field: key, detail: "is not a known field (put free-form data in attributes)"))
        }
        var fields = object
        for key in object.keys where !Self.fields.contains(key) { fields[key] = nil }
        return build(fields, index: index, line: line, errors: errors)
    }

    /// Builds the event from already-mapped fields (plain events and CloudEvents share this).
    func build(_ o: JSONObject, index: Int?, line: Int?, errors initial: [FieldError]) -> Result<Event, InvalidEvent> {
        var errors = initial
        func fail(_ field: String, _ detail: String) { errors.append(FieldError(index: index, line: line, field: field, detail: detail)) }

        /// `identifier`: a name the event is found, grouped or deduplicated by, which must not
        /// hold control characters (a NUL would cut it in C APIs and forge another id).
        func string(_ field: String, required: Bool = false, max: Int, identifier: Bool = false) -> String? {
            guard let value = o[field], value != .null else {
                if required { fail(field, "is required") }
                return nil
            }
            guard case .string(let s) = value else { fail(field, "must be a string, got \(value.typeName)"); return nil }
            if required && s.isEmpty { fail(field, "must not be empty"); return nil }
            if s.unicodeScalars.count > max { fail(field, "is longer than \(max) characters"); return nil }
            if identifier, let error = ControlCharacters.newIdentifierError(field, s, index: index, line: line) { errors.append(error); return nil }
            // An empty name names nothing (a run "" could never be shown: /v1/runs/ is the list).
            if identifier, s.isEmpty { fail(field, "must not be empty (leave it out instead)"); return nil }
            return s
        }

        let id = string("id", max: EventLimits.idLength, identifier: true)
        if let id, id.isEmpty { fail("id", "must not be empty") }
        let type = string("type", required: true, max: EventLimits.typeLength, identifier: true)
        if let type, !Self.isDottedName(type) {
            fail("type", "must be a dotted name such as run.failed (letters, digits, '_' and '-' between dots)")
        }
        let pipeline = string("pipeline", required: true, max: EventLimits.nameLength, identifier: true)
        let run = string("run", max: EventLimits.nameLength, identifier: true)
        let step = string("step", max: EventLimits.nameLength, identifier: true)
        var severity: Severity?
        if let s = string("severity", max: 16) {
            severity = Severity(rawValue: s)
            if severity == nil { fail("severity", "must be one of info, warning, error, critical (got \"\(s)\")") }
        }
        let summary = string("summary", max: EventLimits.summaryLength)
        // Any line break Unicode knows (U+2028, U+0085 too): chat and pages would break the line.
        if let summary, summary.contains(where: \.isNewline) {
            fail("summary", "must be one line (put the rest in details)")
        }
        let details = string("details", max: EventLimits.detailsLength)

        var labels: [(key: String, value: String)] = []
        if let value = o["labels"], value != .null {
            if case .object(let object) = value {
                if object.count > EventLimits.labelCount { fail("labels", "has more than \(EventLimits.labelCount) entries") }
                for (k, v) in object {
                    if !Self.isLabelName(k) { fail("labels.\(k)", "is not a valid label name ([A-Za-z_][A-Za-z0-9_]*, at most \(EventLimits.labelNameLength) characters)"); continue }
                    guard case .string(let s) = v else { fail("labels.\(k)", "must be a string, got \(v.typeName)"); continue }
                    if s.unicodeScalars.count > EventLimits.labelValueLength { fail("labels.\(k)", "is longer than \(EventLimits.labelValueLength) characters"); continue }
                    if let error = ControlCharacters.newIdentifierError("labels.\(k)", s, index: index, line: line) { errors.append(error); continue }
                    labels.append((k, s))
                }
            } else {
                fail("labels", "must be an object of strings, got \(value.typeName)")
            }
        }

        var attributes: JSONObject?
        if let value = o["attributes"], value != .null {
            if case .object(let object) = value {
                if value.serialized().utf8.count > EventLimits.attributesBytes { fail("attributes", "is larger than 64 KiB") }
                attributes = object
            } else {
                fail("attributes", "must be a JSON object, got \(value.typeName)")
            }
        }

        let url = string("url", max: EventLimits.urlLength)
        if let url, let error = ControlCharacters.newIdentifierError("url", url, index: index, line: line) {
            errors.append(error)
        } else if let url, !Self.isHTTPURL(url) {
            fail("url", "must be an absolute http(s) URL")
        }

        var time = now()
        let timeText = string("time", max: 64)
        if let text = timeText {
            if let t = Timestamp(rfc3339: text) { time = t } else { fail("time", "must be an RFC 3339 time such as 2026-11-29T10:00:00Z (got \"\(text)\")") }
        }

        guard errors.isEmpty, let type, let pipeline else { return .failure(InvalidEvent(errors)) }
        var event = Event(
            id: id ?? makeID(), type: type, pipeline: pipeline, run: run, step: step, severity: severity,
            summary: summary, details: details, labels: labels, attributes: attributes, url: url, time: time)
        event.timeGiven = timeText != nil
        return .success(event)
    }

    public static func isDottedName(_ s: String) -> Bool {
        var segmentLength = 0
        var segments = 0
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "."):
                if segmentLength == 0 { return false }
                segments += 1
                segmentLength = 0
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "_"), UInt8(ascii: "-"):
                segmentLength += 1
            default:
                return false
            }
        }
        return segmentLength > 0 && segments >= 1
    }

    public static func isLabelName(_ s: String) -> Bool {
        guard let first = s.utf8.first, s.utf8.count <= EventLimits.labelNameLength else { return false }
        func isLetter(_ b: UInt8) -> Bool { (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 95 }
        guard isLetter(first) else { return false }
        return s.utf8.allSatisfy { isLetter($0) || ($0 >= 48 && $0 <= 57) }
    }

    public static func isHTTPURL(_ s: String) -> Bool {
        let lower = s.lowercased()
        let rest: Substring
        if lower.hasPrefix("https://") { rest = lower.dropFirst(8) } else if lower.hasPrefix("http://") { rest = lower.dropFirst(7) } else { return false }
        guard let host = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first, !host.isEmpty else { return false }
        guard !s.contains(where: { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }) else { return false }
        return URL(string: s) != nil
    }
}
