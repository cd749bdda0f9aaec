/// Reads a request body field by field and goes on after a bad one, so that one `422` names
/// every bad field — a synthesised `Decodable` init stops at the first. A request type's
/// `init(from:)` reads its fields through one, checks what types cannot say (lengths,
/// identities, durations, fields that go together) and ends with `finish()`.
///
/// Any key outside `Key` is refused, so a typo (`timout`) is not silently a field left out.
/// Decoded with `JSONValueDecoder`, the errors come out as the API's `422` with their paths
/// (`inputs[1].type`); with any other decoder they are thrown as a `Problem` all the same.
public struct FieldReader<Key: CodingKey> {
    private let container: KeyedDecodingContainer<Key>
    /// Where this object sits in the body (`inputs[0]`); empty at the top.
    public let path: String
    public private(set) var errors: [FieldError]

    /// Refuses at once, with `notAnObject`, a value that is not an object.
    public init(_ decoder: any Decoder, notAnObject: String = "must be a JSON object") throws(Problem) {
        let path = JSONValueDecoding.path(decoder.codingPath)
        do {
            container = try decoder.container(keyedBy: Key.self)
            let unknown = try decoder.container(keyedBy: AnyKey.self).allKeys.filter { Key(stringValue: $0.stringValue) == nil }
            errors = unknown.map { FieldError(field: path.isEmpty ? $0.stringValue : "\(path).\($0.stringValue)", detail: "is not a known field") }
        } catch {
            throw Problem.invalid([FieldError(field: path.isEmpty ? "(body)" : path, detail: notAnObject)])
        }
        self.path = path
    }

    /// The field's name as the API reports it: `inputs[0].name`.
    public func field(_ key: Key) -> String { field(key.stringValue) }

    /// `name` below this object (`approvers[2]`, `labels.team`).
    public func field(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }

    /// Present and not null: a `null` reads as left out, as in every hand-checked body before.
    public func has(_ key: Key) -> Bool {
        container.contains(key) && !((try? container.decodeNil(forKey: key)) ?? true)
    }

    /// The value, or nil when it is absent or null. A value that does not decode is recorded —
    /// with `otherwise` as its detail when given, else the decoder's own words — and reads as nil.
    public mutating func optional<T: Decodable>(_ type: T.Type, _ key: Key, otherwise: String? = nil) -> T? {
        guard has(key) else { return nil }
        do {
            return try container.decode(T.self, forKey: key)
        } catch let problem as Problem {
            // A nested type read through a FieldReader of its own: its errors carry their paths.
            errors += problem.errors
        } catch let error as DecodingError {
            errors.append(otherwise.map { FieldError(field: field(key), detail: $0) } ?? JSONValueDecoding.fieldError(error))
        } catch {
            errors.append(FieldError(field: field(key), detail: otherwise ?? "\(error)"))
        }
        return nil
    }

    /// As `optional`, and an absent or null field is recorded with `missing`.
    public mutating func required<T: Decodable>(_ type: T.Type, _ key: Key, otherwise: String? = nil, missing: String = "is required") -> T? {
        guard has(key) else {
            refuse(key, missing)
            return nil
        }
        return optional(type, key, otherwise: otherwise)
    }

    /// An array whose elements are each read on their own: every bad element is reported (not
    /// only the first), and the good ones are returned with their places in the array, so a
    /// later check names the element it means (`inputs[2].name`).
    public mutating func each<T: Decodable>(_ type: T.Type, _ key: Key, otherwise: String) -> [(offset: Int, element: T)]? {
        guard let list = optional([Each<T>].self, key, otherwise: otherwise) else { return nil }
        var values: [(offset: Int, element: T)] = []
        for (offset, element) in list.enumerated() {
            switch element.result {
            case .success(let value): values.append((offset, value))
            case .failure(let problem): errors += problem.errors
            }
        }
        return values
    }

    public mutating func refuse(_ key: Key, _ detail: String) { refuse(field: key.stringValue, detail) }

    /// A refusal of a part of a field (`approvers[2]`), named below this object.
    public mutating func refuse(field name: String, _ detail: String) { errors.append(FieldError(field: field(name), detail: detail)) }

    /// A refusal worded elsewhere (`ControlCharacters.fieldError`), if there is one.
    public mutating func record(_ error: FieldError?) {
        if let error { errors.append(error) }
    }

    /// Throws every refusal at once as a `422`.
    public func finish() throws(Problem) {
        if !errors.isEmpty { throw Problem.invalid(errors) }
    }
}

/// One array element decoded on its own; it never throws, so the elements after a bad one are
/// still read.
struct Each<T: Decodable>: Decodable {
    let result: Result<T, Problem>

    init(from decoder: any Decoder) {
        do {
            result = .success(try T(from: decoder))
        } catch let problem as Problem {
            result = .failure(problem)
        } catch let error as DecodingError {
            result = .failure(.invalid([JSONValueDecoding.fieldError(error)]))
        } catch {
            result = .failure(.invalid([FieldError(field: JSONValueDecoding.path(decoder.codingPath), detail: "\(error)")]))
        }
    }
}

extension FieldReader {
    /// A text field: at most `max` characters; `required` ones must not be blank; an
    /// `identifier` (a name things are found or grouped by) has no control characters and, when
    /// given, is not empty.
    public mutating func text(_ key: Key, max: Int, required: Bool = false, identifier: Bool = false) -> String? {
        let read = required ? self.required(String.self, key, otherwise: "must be a string") : optional(String.self, key, otherwise: "must be a string")
        guard let s = read else { return nil }
        if required && s.trimmingCharacters(in: .whitespaces).isEmpty { refuse(key, "must not be empty"); return nil }
        // Counted in Unicode scalars, as events count theirs: a count of user-perceived
        // characters lets one "character" carry thousands of combining marks, past what a
        // database index takes.
        if s.unicodeScalars.count > max { refuse(key, "must be at most \(max) characters"); return nil }
        if identifier, let error = ControlCharacters.fieldError(field(key), s) { errors.append(error); return nil }
        if identifier, s.isEmpty { refuse(key, "must not be empty (leave it out instead)"); return nil }
        return s
    }

    /// A duration such as `30m` or `2h`: positive and at most `max`.
    public mutating func duration(_ key: Key, max: GatehouseDuration, maxText: String) -> GatehouseDuration? {
        guard let s = text(key, max: 40) else { return nil }
        guard let d = GatehouseDuration(s), d.milliseconds > 0 else {
            refuse(key, "must be a positive duration such as 30m or 2h")
            return nil
        }
        if d.milliseconds > max.milliseconds { refuse(key, "must be at most \(maxText)"); return nil }
        return d
    }

    /// An integer from `range`; 2.0 is 2, 2.5 is refused.
    public mutating func integer(_ key: Key, in range: ClosedRange<Int>) -> Int? {
        let refusal = "must be an integer from \(range.lowerBound) to \(range.upperBound)"
        guard let n = optional(Int.self, key, otherwise: refusal) else { return nil }
        guard range.contains(n) else { refuse(key, refusal); return nil }
        return n
    }
}
