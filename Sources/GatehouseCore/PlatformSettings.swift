/// What is wrong with a receiver's platform block: the key it concerns (nil: the block as a
/// whole), and what a person reading `gatehouse.yml` needs to know.
public struct SettingsProblem: Error, Sendable, Equatable {
    public var key: String?
    /// A whole sentence, naming the platform and key: `slack.webhook_url is required`.
    public var message: String
    /// The key is not one the platform has (the message then names the receiver's block).
    public var unknownKey = false
    public init(key: String?, _ message: String, unknownKey: Bool = false) {
        self.key = key
        self.message = message
        self.unknownKey = unknownKey
    }
}

/// Every problem of one platform block.
public struct SettingsProblems: Error, Sendable, Equatable {
    public var all: [SettingsProblem]
    public var summary: String { all.map(\.message).joined(separator: "; ") }
}

/// A platform's settings (the `slack:`, `discord:`… block of a receiver) as a typed value.
/// Each platform declares its own in its folder (GatehouseDelivery) as a `Decodable` struct:
/// its keys, which are required, and what a valid value is — in one place.
public protocol PlatformSettings: Decodable, Sendable {
    static var kind: GatehouseConfig.ReceiverKind { get }
}

extension PlatformSettings {
    /// Decodes the block's settings (secrets already expanded, `*_file` read). Unknown keys are
    /// problems too: most are typos, and a setting that is silently ignored is worse. On
    /// failure every problem found is returned, a mistyped key (with "did you mean") first.
    public static func decode(_ settings: [String: Secret]) -> Result<Self, SettingsProblems> {
        let decoder = SettingsDecoder(settings)
        var problems: [SettingsProblem] = []
        var value: Self?
        do {
            value = try Self(from: decoder)
        } catch let error as DecodingError {
            problems.append(SettingsDecoder.problem(error, platform: kind.rawValue))
        } catch let problem as SettingsProblem {
            problems.append(problem)
        } catch {
            problems.append(SettingsProblem(key: nil, "\(kind.rawValue): \(error)"))
        }
        let asked = decoder.asked.keys
        var unknown: [SettingsProblem] = []
        for key in settings.keys.sorted() where !asked.contains(key) {
            let closest = asked.min(by: { editDistance($0, key) < editDistance($1, key) }).flatMap { editDistance($0, key) <= 2 ? $0 : nil }
            // A failed decode asked only for the keys before the failure: only likely typos
            // are certain to be unknown.
            guard value != nil || closest != nil else { continue }
            unknown.append(SettingsProblem(
                key: key, "unknown key \"\(key)\" in receiver \(kind.rawValue)" + (closest.map { " (did you mean \($0)?)" } ?? ""), unknownKey: true))
        }
        problems = unknown + problems
        if let value, problems.isEmpty { return .success(value) }
        return .failure(SettingsProblems(all: problems))
    }
}

extension KeyedDecodingContainer {
    /// An http(s) URL (a webhook's address).
    public func decodeHTTPURL(_ key: Key) throws -> Secret {
        let url = try decode(Secret.self, forKey: key)
        guard EventValidator.isHTTPURL(url.value) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "must be an http(s) URL")
        }
        return url
    }
}

extension Secret: Decodable {
    public init(from decoder: any Decoder) throws {
        self.init(try decoder.singleValueContainer().decode(String.self))
    }
}

/// Decodes a platform block, a flat map of strings, into its `PlatformSettings`, noting which
/// keys the type asked for (the rest are unknown).
final class SettingsDecoder: Decoder {
    final class Asked { var keys: Set<String> = [] }
    let settings: [String: Secret]
    let asked = Asked()
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(_ settings: [String: Secret], codingPath: [any CodingKey] = []) {
        self.settings = settings
        self.codingPath = codingPath
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(Container<Key>(decoder: self))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        throw DecodingError.typeMismatch([Any].self, .init(codingPath: codingPath, debugDescription: "must be a mapping"))
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        throw DecodingError.typeMismatch(String.self, .init(codingPath: codingPath, debugDescription: "must be a mapping"))
    }

    static func problem(_ error: DecodingError, platform: String) -> SettingsProblem {
        switch error {
        case .keyNotFound(let key, _): return SettingsProblem(key: key.stringValue, "\(platform).\(key.stringValue) is required")
        case .dataCorrupted(let c), .typeMismatch(_, let c), .valueNotFound(_, let c):
            let key = c.codingPath.last?.stringValue
            return SettingsProblem(key: key, "\(platform)\(key.map { ".\($0)" } ?? "") \(c.debugDescription)")
        @unknown default: return SettingsProblem(key: nil, "\(platform): \(error)")
        }
    }

    struct Container<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let decoder: SettingsDecoder
        var codingPath: [any CodingKey] { decoder.codingPath }
        var allKeys: [Key] { decoder.settings.keys.compactMap(Key.init(stringValue:)) }

        func contains(_ key: Key) -> Bool {
            decoder.asked.keys.insert(key.stringValue)
            return decoder.settings[key.stringValue] != nil
        }

        func decodeNil(forKey key: Key) throws -> Bool { !contains(key) }

        func text(_ key: Key) throws -> String {
            guard contains(key), let value = decoder.settings[key.stringValue] else {
                throw DecodingError.keyNotFound(key, .init(codingPath: codingPath + [key], debugDescription: "is required"))
            }
            return value.value
        }

        func decode(_ type: String.Type, forKey key: Key) throws -> String { try text(key) }

        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
            switch try text(key).lowercased() {
            case "true", "yes", "on": return true
            case "false", "no", "off": return false
            default: throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "must be true or false")
            }
        }

        func decode(_ type: Int.Type, forKey key: Key) throws -> Int {
            guard let n = Int(try text(key)) else { throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "must be a whole number") }
            return n
        }

        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            if type == Secret.self { return Secret(try text(key)) as! T }
            if type == String.self { return try text(key) as! T }
            if type == Bool.self { return try decode(Bool.self, forKey: key) as! T }
            if type == Int.self { return try decode(Int.self, forKey: key) as! T }
            throw DecodingError.typeMismatch(type, .init(codingPath: codingPath + [key], debugDescription: "is not a setting a platform block can hold"))
        }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            throw DecodingError.typeMismatch([String: Any].self, .init(codingPath: codingPath + [key], debugDescription: "must be a single value"))
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            throw DecodingError.typeMismatch([Any].self, .init(codingPath: codingPath + [key], debugDescription: "must be a single value"))
        }

        func superDecoder() throws -> any Decoder { decoder }
        func superDecoder(forKey key: Key) throws -> any Decoder { decoder }
    }
}

/// Levenshtein distance: how "did you mean" finds the key a typo was meant to be.
public func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}
