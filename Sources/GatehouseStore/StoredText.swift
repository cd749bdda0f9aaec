import Foundation
import GRDB

/// Free text (an event's summary and details, a silence's comment) stored exactly as sent,
/// NUL included.
///
/// GRDB binds a Swift `String` to SQLite as a C string (`sqlite3_bind_text(…, -1, …)`) and
/// reads TEXT back with `String(cString:)`: both stop at the first NUL, so `"a\u0000b"` was
/// stored as `"a"`. Text that holds a NUL is therefore stored as a BLOB of its UTF-8 bytes
/// (SQLite keeps a blob's length); any other text stays TEXT, as before. Reading accepts both.
/// Identifiers never need this: they refuse control characters at validation.
struct StoredText: DatabaseValueConvertible, Codable, Sendable {
    var string: String

    init(_ string: String) { self.string = string }

    var databaseValue: DatabaseValue {
        string.utf8.contains(0) ? Data(string.utf8).databaseValue : string.databaseValue
    }

    static func fromDatabaseValue(_ dbValue: DatabaseValue) -> StoredText? {
        switch dbValue.storage {
        case .string(let s): return StoredText(s)
        case .blob(let data): return StoredText(String(decoding: data, as: UTF8.self))
        default: return nil
        }
    }

    init(from decoder: any Decoder) throws { string = try decoder.singleValueContainer().decode(String.self) }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(string)
    }
}
