/// Encodes `Encodable` API types into a `JSONValue`, so a response is a typed struct and its
/// bytes still come from the one serializer (`JSONValue.serialized`).
///
/// Why not `JSONEncoder`: it neither keeps the declared key order (clients and the examples in
/// docs read better in a stable, meaningful order) nor carries a free-form `JSONValue` field
/// through untouched (a 64-bit id inside `attributes` must come back digit for digit). Here keys
/// come out in the order `encode(to:)` writes them — declaration order for synthesized
/// conformances — and `JSONValue`, `JSONObject` and `Timestamp` (as RFC 3339) are written as is.
///
/// Absent optionals are written as `null`: API resources show every field they have, so a
/// client can tell "unset" from "unknown field". A type whose JSON omits absent fields instead
/// (a gate's spec echoes only what was given) conforms to `JSONOmitsAbsentFields`.
public struct JSONValueEncoder {
    public init() {}

    public func encode<T: Encodable>(_ value: T) throws -> JSONValue {
        try JSONValueEncoding.encode(value, path: [])
    }
}

/// A type whose JSON leaves out `nil` fields rather than writing `null`.
public protocol JSONOmitsAbsentFields {}

/// A type written as one fixed JSON value, ahead of its `Encodable` conformance.
public protocol JSONValueRepresentable {
    var jsonValue: JSONValue { get }
}

extension JSONValue: JSONValueRepresentable {
    public var jsonValue: JSONValue { self }
}

extension JSONObject: JSONValueRepresentable {
    public var jsonValue: JSONValue { .object(self) }
}

extension Timestamp: JSONValueRepresentable {
    public var jsonValue: JSONValue { .string(rfc3339) }
}

/// `JSONValue` is `Codable` (JSON.swift) and `JSONObject` `Encodable`, so either can sit in a
/// typed response as a free-form field; through `JSONValueEncoder` they are copied as is.
extension JSONObject: Codable {
    public func encode(to encoder: any Encoder) throws { try JSONValue.object(self).encode(to: encoder) }

    public init(from decoder: any Decoder) throws {
        guard case .object(let o) = try JSONValue(from: decoder) else {
            throw DecodingError.typeMismatch(JSONObject.self, .init(codingPath: decoder.codingPath, debugDescription: "must be an object"))
        }
        self = o
    }
}

/// A coding key made from any string: keys of free-form objects and computed names.
public struct AnyKey: CodingKey {
    public var stringValue: String
    public var intValue: Int?
    public init(_ string: String) { stringValue = string }
    public init?(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) {
        stringValue = String(intValue)
        self.intValue = intValue
    }
}

// MARK: - The encoder

enum JSONValueEncoding {
    /// One value under construction. Containers hand out references, so a nested container
    /// taken now and filled later still lands in its parent.
    final class Slot {
        enum Content {
            case unset
            case value(JSONValue)
            case object([(String, Slot)])
            case array([Slot])
        }
        var content: Content = .unset

        var resolved: JSONValue {
            switch content {
            case .unset: return .object(JSONObject())
            case .value(let v): return v
            case .array(let items): return .array(items.map(\.resolved))
            case .object(let entries):
                var o = JSONObject()
                for (key, slot) in entries { o[key] = slot.resolved }
                return .object(o)
            }
        }

        func set(_ key: String, _ slot: Slot) {
            if case .object(var entries) = content {
                if let i = entries.firstIndex(where: { $0.0 == key }) { entries[i].1 = slot } else { entries.append((key, slot)) }
                content = .object(entries)
            } else {
                content = .object([(key, slot)])
            }
        }

        func append(_ slot: Slot) {
            if case .array(var items) = content {
                items.append(slot)
                content = .array(items)
            } else {
                content = .array([slot])
            }
        }

        var count: Int {
            if case .array(let items) = content { return items.count }
            return 0
        }
    }

    static func encode<T: Encodable>(_ value: T, path: [any CodingKey]) throws -> JSONValue {
        try slot(for: value, path: path).resolved
    }

    static func slot<T: Encodable>(for value: T, path: [any CodingKey]) throws -> Slot {
        let slot = Slot()
        if let fixed = value as? any JSONValueRepresentable {
            slot.content = .value(fixed.jsonValue)
            return slot
        }
        let encoder = Encoder_(slot: slot, path: path, omitsAbsent: T.self is any JSONOmitsAbsentFields.Type)
        try value.encode(to: encoder)
        return slot
    }

    static func number<N: BinaryInteger>(_ n: N) -> JSONValue { .number(String(n)) }

    final class Encoder_: Swift.Encoder {
        let slot: Slot
        let codingPath: [any CodingKey]
        let omitsAbsent: Bool
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        init(slot: Slot, path: [any CodingKey], omitsAbsent: Bool) {
            self.slot = slot
            self.codingPath = path
            self.omitsAbsent = omitsAbsent
        }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            if case .object = slot.content {} else { slot.content = .object([]) }
            return KeyedEncodingContainer(Keyed<Key>(slot: slot, codingPath: codingPath, omitsAbsent: omitsAbsent))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            if case .array = slot.content {} else { slot.content = .array([]) }
            return Unkeyed(slot: slot, codingPath: codingPath)
        }

        func singleValueContainer() -> any SingleValueEncodingContainer {
            Single(slot: slot, codingPath: codingPath)
        }
    }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let slot: Slot
        let codingPath: [any CodingKey]
        let omitsAbsent: Bool

        private func put(_ value: JSONValue, _ key: Key) {
            let s = Slot()
            s.content = .value(value)
            slot.set(key.stringValue, s)
        }

        mutating func encodeNil(forKey key: Key) throws { put(.null, key) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { put(.bool(value), key) }
        mutating func encode(_ value: String, forKey key: Key) throws { put(.string(value), key) }
        mutating func encode(_ value: Double, forKey key: Key) throws { put(.double(value), key) }
        mutating func encode(_ value: Float, forKey key: Key) throws { put(.double(Double(value)), key) }
        mutating func encode(_ value: Int, forKey key: Key) throws { put(number(value), key) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { put(number(value), key) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { put(number(value), key) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { put(number(value), key) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { put(number(value), key) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { put(number(value), key) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { put(number(value), key) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { put(number(value), key) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { put(number(value), key) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { put(number(value), key) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            slot.set(key.stringValue, try JSONValueEncoding.slot(for: value, path: codingPath + [key]))
        }

        // Synthesized conformances send optionals here: `null`, or nothing for a type that
        // omits absent fields. Every overload is needed, or the protocol's default (omit) wins.
        private mutating func absent(_ key: Key) { if !omitsAbsent { put(.null, key) } }
        mutating func encodeIfPresent(_ value: Bool?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: String?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: Double?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: Float?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: Int?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: Int8?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: Int16?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: Int32?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: Int64?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: UInt?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: UInt8?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: UInt16?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: UInt32?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent(_ value: UInt64?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }
        mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws { if let value { try encode(value, forKey: key) } else { absent(key) } }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            let child = Slot()
            child.content = .object([])
            slot.set(key.stringValue, child)
            return KeyedEncodingContainer(Keyed<NestedKey>(slot: child, codingPath: codingPath + [key], omitsAbsent: omitsAbsent))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let child = Slot()
            child.content = .array([])
            slot.set(key.stringValue, child)
            return Unkeyed(slot: child, codingPath: codingPath + [key])
        }

        mutating func superEncoder() -> any Swift.Encoder { superEncoder(forKey: Key(stringValue: "super")!) }
        mutating func superEncoder(forKey key: Key) -> any Swift.Encoder {
            let child = Slot()
            slot.set(key.stringValue, child)
            return Encoder_(slot: child, path: codingPath + [key], omitsAbsent: omitsAbsent)
        }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let slot: Slot
        let codingPath: [any CodingKey]
        var count: Int { slot.count }

        private func put(_ value: JSONValue) {
            let s = Slot()
            s.content = .value(value)
            slot.append(s)
        }

        mutating func encodeNil() throws { put(.null) }
        mutating func encode(_ value: Bool) throws { put(.bool(value)) }
        mutating func encode(_ value: String) throws { put(.string(value)) }
        mutating func encode(_ value: Double) throws { put(.double(value)) }
        mutating func encode(_ value: Float) throws { put(.double(Double(value))) }
        mutating func encode(_ value: Int) throws { put(number(value)) }
        mutating func encode(_ value: Int8) throws { put(number(value)) }
        mutating func encode(_ value: Int16) throws { put(number(value)) }
        mutating func encode(_ value: Int32) throws { put(number(value)) }
        mutating func encode(_ value: Int64) throws { put(number(value)) }
        mutating func encode(_ value: UInt) throws { put(number(value)) }
        mutating func encode(_ value: UInt8) throws { put(number(value)) }
        mutating func encode(_ value: UInt16) throws { put(number(value)) }
        mutating func encode(_ value: UInt32) throws { put(number(value)) }
        mutating func encode(_ value: UInt64) throws { put(number(value)) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            slot.append(try JSONValueEncoding.slot(for: value, path: codingPath + [AnyKey(String(count))]))
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let child = Slot()
            child.content = .object([])
            slot.append(child)
            return KeyedEncodingContainer(Keyed<NestedKey>(slot: child, codingPath: codingPath, omitsAbsent: false))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let child = Slot()
            child.content = .array([])
            slot.append(child)
            return Unkeyed(slot: child, codingPath: codingPath)
        }

        mutating func superEncoder() -> any Swift.Encoder {
            let child = Slot()
            slot.append(child)
            return Encoder_(slot: child, path: codingPath, omitsAbsent: false)
        }
    }

    struct Single: SingleValueEncodingContainer {
        let slot: Slot
        let codingPath: [any CodingKey]

        private func put(_ value: JSONValue) { slot.content = .value(value) }

        mutating func encodeNil() throws { put(.null) }
        mutating func encode(_ value: Bool) throws { put(.bool(value)) }
        mutating func encode(_ value: String) throws { put(.string(value)) }
        mutating func encode(_ value: Double) throws { put(.double(value)) }
        mutating func encode(_ value: Float) throws { put(.double(Double(value))) }
        mutating func encode(_ value: Int) throws { put(number(value)) }
        mutating func encode(_ value: Int8) throws { put(number(value)) }
        mutating func encode(_ value: Int16) throws { put(number(value)) }
        mutating func encode(_ value: Int32) throws { put(number(value)) }
        mutating func encode(_ value: Int64) throws { put(number(value)) }
        mutating func encode(_ value: UInt) throws { put(number(value)) }
        mutating func encode(_ value: UInt8) throws { put(number(value)) }
        mutating func encode(_ value: UInt16) throws { put(number(value)) }
        mutating func encode(_ value: UInt32) throws { put(number(value)) }
        mutating func encode(_ value: UInt64) throws { put(number(value)) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            let inner = try JSONValueEncoding.slot(for: value, path: codingPath)
            slot.content = inner.content
        }
    }
}

extension JSONValueEncoder {
    /// The JSON of an API type whose conformance cannot fail: this encoder's containers never
    /// throw, so only a hand-written `encode(to:)` that throws on purpose could — a bug, stopped
    /// here with the type's name rather than sent as a half-written body.
    public static func value<T: Encodable>(_ value: T) -> JSONValue {
        do { return try JSONValueEncoder().encode(value) } catch { preconditionFailure("encoding \(T.self) failed: \(error)") }
    }
}
