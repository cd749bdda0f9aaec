import Foundation

/// Turns a request body into validated events, for each media type docs/api.md (Events) lists.
/// A batch is all-or-nothing: any invalid item fails the whole request, and every invalid
/// item is named (index, and line for NDJSON).
public struct EventIntake: Sendable {
    public var validator: EventValidator
    public var maxItems: Int

    public init(validator: EventValidator = EventValidator(), maxItems: Int = 1000) {
        self.validator = validator
        self.maxItems = maxItems
    }

    public enum MediaType: Sendable, Equatable {
        case json, ndjson, cloudEvent, cloudEventBatch
        /// CloudEvents binary mode: attributes in `ce-*` headers, the body is `data`.
        case cloudEventBinary
    }

    /// Picks the mode from `Content-Type` (parameters ignored) and the presence of
    /// `ce-specversion`. nil means unsupported (415).
    public static func mediaType(contentType: String?, hasCESpecVersion: Bool) -> MediaType? {
        let base = (contentType ?? "application/json").split(separator: ";").first.map { $0.trimmingASCIIWhitespace.lowercased() } ?? ""
        switch base {
        case "application/cloudevents+json": return .cloudEvent
        case "application/cloudevents-batch+json": return .cloudEventBatch
        case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
            return .ndjson
        case "application/json", "":
            return hasCESpecVersion ? .cloudEventBinary : .json
        default:
            return nil
        }
    }

    /// `headers(name)` answers lower-case header names (only used in binary mode).
    public func events(from body: [UInt8], mediaType: MediaType, headers: (String) -> String? = { _ in nil }) -> Result<[Event], Problem> {
        switch mediaType {
        case .json:
            return parseJSON(body).flatMap { value in
                if case .array(let items) = value { return validateBatch(items.enumerated().map { ($0.offset, nil, $0.element) }, plain: true) }
                return validateBatch([(nil, nil, value)], plain: true)
            }
        case .cloudEvent:
            return parseJSON(body).flatMap { validateBatch([(nil, nil, $0)], plain: false) }
        case .cloudEventBatch:
            return parseJSON(body).flatMap { value in
                guard case .array(let items) = value else {
                    return .failure(.invalid([FieldError(field: "(body)", detail: "must be a JSON array of CloudEvents")]))
                }
                return validateBatch(items.enumerated().map { ($0.offset, nil, $0.element) }, plain: false)
            }
        case .ndjson:
            var items: [(Int?, Int?, JSONValue)] = []
            var parseErrors: [FieldError] = []
            for (lineNumber, line) in NDJSONLines.lines(in: body[...]) {
                do {
                    let value = try JSONValue.parse(bytes: line)
                    items.append((items.count, lineNumber, value))
                } catch {
                    parseErrors.append(FieldError(index: items.count, line: lineNumber, field: "(line)", detail: "is not valid JSON: \(error.message) at column \(error.column)"))
                    items.append((items.count, lineNumber, .null))
                }
                if items.count > maxItems { return .failure(tooMany()) }
            }
            if !parseErrors.isEmpty { return .failure(.invalid(parseErrors)) }
            return validateBatch(items, plain: true)
        case .cloudEventBinary:
            return parseJSON(body).flatMap { data in
                var object = JSONObject()
                var errors: [FieldError] = []
                for attribute in ["specversion", "id", "source", "type", "time", "subject", "dataschema"] {
                    guard let raw = headers("ce-\(attribute)") else { continue }
                    if let value = Self.percentDecodedHeader(raw) {
                        object.append(attribute, .string(value))
                    } else {
                        errors.append(FieldError(
                            field: "ce-\(attribute)",
                            detail: "must be printable ASCII, anything else (and % itself) percent-encoded as UTF-8, as the CloudEvents HTTP binding says (é is %C3%A9)"))
                    }
                }
                if !errors.isEmpty { return .failure(.invalid(errors)) }
                object.append("data", data)
                return validateBatch([(nil, nil, .object(object))], plain: false)
            }
        }
    }

    /// A `ce-*` header's value as the CloudEvents HTTP binding (3.1.3.2) has it sent: printable
    /// ASCII, with `%XX` standing for the bytes of UTF-8 text. Decoded here, so `r%C3%A9sum%C3%A9`
    /// names the same run as `résumé` in structured mode. Nil for a raw byte outside printable
    /// ASCII (its text is unknown: it would be stored as U+FFFD), a `%` not followed by two hex
    /// digits, or bytes that are not UTF-8.
    public static func percentDecodedHeader(_ raw: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(raw.utf8.count)
        var input = raw.utf8.makeIterator()
        func hex(_ c: UInt8?) -> UInt8? {
            switch c {
            case let c? where (0x30...0x39).contains(c): return c - 0x30
            case let c? where (0x41...0x46).contains(c): return c - 0x41 + 10
            case let c? where (0x61...0x66).contains(c): return c - 0x61 + 10
            default: return nil
            }
        }
        while let byte = input.next() {
            // Printable ASCII and the space (which HTTP trims at the ends, and senders often leave).
            guard (0x20...0x7E).contains(byte) else { return nil }
            if byte == UInt8(ascii: "%") {
                guard let high = hex(input.next()), let low = hex(input.next()) else { return nil }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private func tooMany() -> Problem { .tooLarge("a request carries at most \(maxItems) events; split the batch") }

    private func parseJSON(_ body: [UInt8]) -> Result<JSONValue, Problem> {
        if body.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            return .failure(.badRequest("the request body is empty; send a JSON event"))
        }
        do {
            return .success(try JSONValue.parse(bytes: body))
        } catch {
            return .failure(.badRequest("the body is not valid JSON: \(error.message) at line \(error.line), column \(error.column)"))
        }
    }

    private func validateBatch(_ items: [(index: Int?, line: Int?, value: JSONValue)], plain: Bool) -> Result<[Event], Problem> {
        if items.count > maxItems { return .failure(tooMany()) }
        if items.isEmpty { return .failure(.invalid([FieldError(field: "(body)", detail: "holds no events")])) }
        var events: [Event] = []
        events.reserveCapacity(items.count)
        var errors: [FieldError] = []
        for item in items {
            let result = plain
                ? validator.validate(item.value, index: item.index, line: item.line)
                : validateCloudEvent(item.value, index: item.index)
            switch result {
            case .success(let event): if errors.isEmpty { events.append(event) }
            case .failure(let e): errors.append(contentsOf: e.errors)
            }
            if errors.count >= 100 { break }
        }
        if errors.isEmpty {
            // Only ids the senders gave can repeat; generated ones are unique.
            let given = items.map { $0.value.objectValue?["id"] != nil }
            errors = Self.conflictingRepeats(events, at: items.map { ($0.index, $0.line) }, given: given)
        }
        return errors.isEmpty ? .success(events) : .failure(.invalid(errors))
    }

    /// An id given twice in one request must carry the same content both times (then the second
    /// is an idempotent duplicate); two different events under one id are refused whole, naming
    /// both items — storing the first and dropping the second would lose data silently.
    static func conflictingRepeats(_ events: [Event], at positions: [(index: Int?, line: Int?)], given: [Bool]) -> [FieldError] {
        guard events.count > 1 else { return [] }
        func name(_ i: Int) -> String {
            if let line = positions[i].line { return "line \(line)" }
            return "item \(positions[i].index ?? i)"
        }
        // By bytes, as the store tells ids apart.
        var first: [ExactText: Int] = [:]
        var errors: [FieldError] = []
        for (i, event) in events.enumerated() where given[i] {
            guard let j = first[ExactText(event.id)] else { first[ExactText(event.id)] = i; continue }
            if !events[j].sameContent(as: event) {
                errors.append(FieldError(
                    index: positions[i].index, line: positions[i].line, field: "id",
                    detail: "\(name(i)) repeats the id \"\(event.id)\" of \(name(j)) with different content"))
            }
        }
        return errors
    }

    /// CloudEvents 1.0 → Gatehouse event: `id`, `type`, `time` map directly; `data` supplies the
    /// rest, its unknown keys and any extension attributes go to `attributes`; without
    /// `data.pipeline` the last path segment of `source` is the pipeline; `subject` is the run.
    public func validateCloudEvent(_ value: JSONValue, index: Int? = nil) -> Result<Event, InvalidEvent> {
        guard case .object(let ce) = value else {
            return .failure(InvalidEvent([FieldError(index: index, field: "(event)", detail: "must be a CloudEvent JSON object, got \(value.typeName)")]))
        }
        var errors: [FieldError] = []
        func fail(_ field: String, _ detail: String) { errors.append(FieldError(index: index, field: field, detail: detail)) }

        switch ce["specversion"] {
        case .string("1.0")?: break
        case nil: fail("specversion", "is required (\"1.0\")")
        default: fail("specversion", "must be \"1.0\"")
        }
        for required in ["id", "source", "type"] where ce[required]?.stringValue?.isEmpty ?? true {
            fail(required, "is required and must be a non-empty string")
        }
        if ce["data_base64"] != nil { fail("data_base64", "is not supported; send the event's data as a JSON object in data") }
        if let contentType = ce["datacontenttype"]?.stringValue, !contentType.lowercased().hasPrefix("application/json") {
            fail("datacontenttype", "must be application/json (got \"\(contentType)\")")
        }

        var fields = JSONObject()
        var attributes = JSONObject()
        switch ce["data"] {
        case .object(let data)?:
            for (key, value) in data {
                if key == "attributes", case .object(let given) = value {
                    for (k, v) in given { attributes[k] = v }
                } else if EventValidator.fields.contains(key) && !["id", "type", "time"].contains(key) {
                    fields[key] = value
                } else {
                    attributes[key] = value
                }
            }
        case nil, .null?: break
        case let other?: fail("data", "must be a JSON object, got \(other.typeName)")
        }
        let standard: Set<String> = ["specversion", "id", "source", "type", "time", "subject", "data", "datacontenttype", "dataschema", "data_base64"]
        for (key, value) in ce where !standard.contains(key) { attributes[key] = value }

        if let id = ce["id"] { fields["id"] = id }
        if let type = ce["type"] { fields["type"] = type }
        if let time = ce["time"] { fields["time"] = time }
        if fields["pipeline"] == nil, let source = ce["source"]?.stringValue {
            let segment = source.split(separator: "/").last.map(String.init) ?? source
            if !segment.isEmpty { fields["pipeline"] = .string(segment) }
        }
        if fields["run"] == nil, let subject = ce["subject"] { fields["run"] = subject }
        if !attributes.isEmpty { fields["attributes"] = .object(attributes) }
        return validator.build(fields, index: index, line: Int?.none, errors: errors)
    }
}
