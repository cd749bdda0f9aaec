/// Decodes a typed API request from a parsed `JSONValue`, failing with the API's own error: a
/// `422` naming the field (`inputs.pct: must be a number`), as every hand-checked body does.
///
/// Strict where a person's typo would otherwise be silently dropped: a field the type does not
/// declare is refused, when the type lists its keys (`JSONStrictKeys`). All unknown fields are
/// reported together; of type errors, the first one found (decoding stops there).
public struct JSONValueDecoder {
    public init() {}

    public func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws(Problem) -> T {
        var errors: [FieldError] = []
        if let strict = T.self as? any JSONStrictKeys.Type, let object = value.objectValue {
            let known = strict.knownKeys
            for key in object.keys where !known.contains(key) { errors.append(FieldError(field: key, detail: "is not a known field")) }
        }
        do {
            let decoded = try T(from: JSONValueDecoding.Decoder_(value: value, path: []))
            if !errors.isEmpty { throw Problem.invalid(errors) }
            return decoded
        } catch let problem as Problem {
            throw problem
        } catch let error as DecodingError {
            throw Problem.invalid(errors + [JSONValueDecoding.fieldError(error)])
        } catch {
            throw Problem.invalid(errors + [FieldError(field: "body", detail: "\(error)")])
        }
    }
}

/// A request type whose JSON may carry only the keys it declares.
public protocol JSONStrictKeys {
    static var knownKeys: Set<String> { get }
}

extension JSONStrictKeys where Self: Decodable {
    /// For a `CodingKeys` enum that is `CaseIterable`.
    public static func keys<K: CodingKey & CaseIterable>(_ k: K.Type) -> Set<String> { Set(K.allCases.map(\.stringValue)) }
}

enum JSONValueDecoding {
    static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }.description
    }

    /// The API's wording for what went wrong where.
    static func fieldError(_ error: DecodingError) -> FieldError {
        switch error {
        case .typeMismatch(_, let context), .dataCorrupted(let context):
            return FieldError(field: path(context.codingPath), detail: context.debugDescription)
        case .valueNotFound(_, let context):
            return FieldError(field: path(context.codingPath), detail: "must not be null")
        case .keyNotFound(let key, let context):
            return FieldError(field: path(context.codingPath + [key]), detail: "is required")
        @unknown default:
            return FieldError(field: "body", detail: "\(error)")
        }
    }

    static func mismatch(_ expected: String, _ value: JSONValue, _ path: [any CodingKey]) -> DecodingError {
        .typeMismatch(Any.self, .init(codingPath: path, debugDescription: "must be \(expected), got \(value.typeName)"))
    }

    struct Decoder_: Swift.Decoder {
        let value: JSONValue
        let path: [any CodingKey]
        var codingPath: [any CodingKey] { path }
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
            guard let object = value.objectValue else { throw mismatch("an object", value, path) }
            return KeyedDecodingContainer(Keyed<Key>(object: object, codingPath: path))
        }

        func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
            guard let items = value.arrayValue else { throw mismatch("an array", value, path) }
            return Unkeyed(items: items, codingPath: path)
        }

        func singleValueContainer() throws -> any SingleValueDecodingContainer { Single(value: value, codingPath: path) }
    }

    /// Scalars, shared by the three containers.
    static func scalar<T: Decodable>(_ type: T.Type, _ value: JSONValue, _ path: [any CodingKey]) throws -> T {
        if T.self == JSONValue.self { return value as! T }
        if T.self == JSONObject.self {
            guard let o = value.objectValue else { throw mismatch("an object", value, path) }
            return o as! T
        }
        switch type {
        case is String.Type:
            guard let s = value.stringValue else { throw mismatch("a string", value, path) }
            return s as! T
        case is Bool.Type:
            guard let b = value.boolValue else { throw mismatch("a boolean", value, path) }
            return b as! T
        case is Double.Type:
            guard let d = value.doubleValue else { throw mismatch("a number", value, path) }
            return d as! T
        case is Float.Type:
            guard let d = value.doubleValue else { throw mismatch("a number", value, path) }
            return Float(d) as! T
        case let integer as any FixedWidthInteger.Type:
            // "3" and "3.0" are both the integer 3; "3.5" and 1e30 are refused, not rounded.
            guard case .number(let text) = value,
                  let i = integer.init(text) ?? Double(text).flatMap({ integer.init(exactly: $0) }) else {
                throw mismatch("an integer", value, path)
            }
            return i as! T
        default:
            return try T(from: Decoder_(value: value, path: path))
        }
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let object: JSONObject
        let codingPath: [any CodingKey]

        var allKeys: [Key] { object.keys.compactMap(Key.init(stringValue:)) }
        func contains(_ key: Key) -> Bool { object[key.stringValue] != nil }

        private func value(_ key: Key) throws -> JSONValue {
            guard let v = object[key.stringValue] else {
                throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "is required"))
            }
            return v
        }

        func decodeNil(forKey key: Key) throws -> Bool { object[key.stringValue] == nil || object[key.stringValue] == .null }

        // The protocol asks for each scalar; all go one way.
        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try decode(type as Bool.Type, generic: key) }
        func decode(_ type: String.Type, forKey key: Key) throws -> String { try decode(type as String.Type, generic: key) }
        func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try decode(type as Double.Type, generic: key) }
        func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try decode(type as Float.Type, generic: key) }
        func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try decode(type as Int.Type, generic: key) }
        func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try decode(type as Int8.Type, generic: key) }
        func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try decode(type as Int16.Type, generic: key) }
        func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try decode(type as Int32.Type, generic: key) }
        func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try decode(type as Int64.Type, generic: key) }
        func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try decode(type as UInt.Type, generic: key) }
        func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try decode(type as UInt8.Type, generic: key) }
        func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try decode(type as UInt16.Type, generic: key) }
        func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try decode(type as UInt32.Type, generic: key) }
        func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try decode(type as UInt64.Type, generic: key) }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try decode(type, generic: key) }

        private func decode<T: Decodable>(_ type: T.Type, generic key: Key) throws -> T {
            let v = try value(key)
            if v == .null, T.self != JSONValue.self {
                throw DecodingError.valueNotFound(T.self, .init(codingPath: codingPath + [key], debugDescription: "must not be null"))
            }
            return try scalar(T.self, v, codingPath + [key])
        }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try Decoder_(value: value(key), path: codingPath + [key]).container(keyedBy: type)
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try Decoder_(value: value(key), path: codingPath + [key]).unkeyedContainer()
        }

        func superDecoder() throws -> any Swift.Decoder { Decoder_(value: .object(object), path: codingPath) }
        func superDecoder(forKey key: Key) throws -> any Swift.Decoder { Decoder_(value: try value(key), path: codingPath + [key]) }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let items: [JSONValue]
        let codingPath: [any CodingKey]
        var currentIndex = 0
        var count: Int? { items.count }
        var isAtEnd: Bool { currentIndex >= items.count }

        private mutating func next() throws -> (JSONValue, [any CodingKey]) {
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(Any.self, .init(codingPath: codingPath, debugDescription: "has too few items"))
            }
            defer { currentIndex += 1 }
            return (items[currentIndex], codingPath + [AnyKey(intValue: currentIndex)!])
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, items[currentIndex] == .null else { return false }
            currentIndex += 1
            return true
        }

        mutating func decode(_ type: Bool.Type) throws -> Bool { try decodeAny(type) }
        mutating func decode(_ type: String.Type) throws -> String { try decodeAny(type) }
        mutating func decode(_ type: Double.Type) throws -> Double { try decodeAny(type) }
        mutating func decode(_ type: Float.Type) throws -> Float { try decodeAny(type) }
        mutating func decode(_ type: Int.Type) throws -> Int { try decodeAny(type) }
        mutating func decode(_ type: Int8.Type) throws -> Int8 { try decodeAny(type) }
        mutating func decode(_ type: Int16.Type) throws -> Int16 { try decodeAny(type) }
        mutating func decode(_ type: Int32.Type) throws -> Int32 { try decodeAny(type) }
        mutating func decode(_ type: Int64.Type) throws -> Int64 { try decodeAny(type) }
        mutating func decode(_ type: UInt.Type) throws -> UInt { try decodeAny(type) }
        mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try decodeAny(type) }
        mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try decodeAny(type) }
        mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try decodeAny(type) }
        mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try decodeAny(type) }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeAny(type) }

        private mutating func decodeAny<T: Decodable>(_ type: T.Type) throws -> T {
            let (v, path) = try next()
            return try scalar(T.self, v, path)
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            let (v, path) = try next()
            return try Decoder_(value: v, path: path).container(keyedBy: type)
        }

        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            let (v, path) = try next()
            return try Decoder_(value: v, path: path).unkeyedContainer()
        }

        mutating func superDecoder() throws -> any Swift.Decoder {
            let (v, path) = try next()
            return Decoder_(value: v, path: path)
        }
    }

    struct Single: SingleValueDecodingContainer {
        let value: JSONValue
        let codingPath: [any CodingKey]
        func decodeNil() -> Bool { value == .null }
        func decode(_ type: Bool.Type) throws -> Bool { try scalar(type, value, codingPath) }
        func decode(_ type: String.Type) throws -> String { try scalar(type, value, codingPath) }
        func decode(_ type: Double.Type) throws -> Double { try scalar(type, value, codingPath) }
        func decode(_ type: Float.Type) throws -> Float { try scalar(type, value, codingPath) }
        func decode(_ type: Int.Type) throws -> Int { try scalar(type, value, codingPath) }
        func decode(_ type: Int8.Type) throws -> Int8 { try scalar(type, value, codingPath) }
        func decode(_ type: Int16.Type) throws -> Int16 { try scalar(type, value, codingPath) }
        func decode(_ type: Int32.Type) throws -> Int32 { try scalar(type, value, codingPath) }
        func decode(_ type: Int64.Type) throws -> Int64 { try scalar(type, value, codingPath) }
        func decode(_ type: UInt.Type) throws -> UInt { try scalar(type, value, codingPath) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try scalar(type, value, codingPath) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try scalar(type, value, codingPath) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try scalar(type, value, codingPath) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try scalar(type, value, codingPath) }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try scalar(T.self, value, codingPath) }
    }
}
