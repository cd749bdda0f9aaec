import Foundation

/// `application/x-www-form-urlencoded` (Slack's `payload=` field, the web forms): the first
/// value of each field.
func parseForm(_ bytes: [UInt8]) -> [String: String] {
    var fields: [String: String] = [:]
    for (key, value) in parseFormPairs(bytes) where fields[key] == nil { fields[key] = value }
    return fields
}

/// Every field in order, repeated ones included (checkbox groups).
func parseFormPairs(_ bytes: [UInt8]) -> [(String, String)] {
    String(decoding: bytes, as: UTF8.self).split(separator: "&").map { pair in
        let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        func decode(_ s: Substring) -> String { String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s) }
        return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : "")
    }
}
