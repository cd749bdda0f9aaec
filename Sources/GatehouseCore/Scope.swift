import Foundation

/// Token scopes (docs/api.md, Access). `admin` grants every scope.
public enum Scope: String, Sendable, CaseIterable, Codable {
    case eventsWrite = "events:write"
    case eventsRead = "events:read"
    case gatesWrite = "gates:write"
    case gatesDecide = "gates:decide"
    case datasetsWrite = "datasets:write"
    case datasetsLabel = "datasets:label"
    case admin

    /// Parses `events:write,gates:write`; unknown names are reported by name.
    public static func parseList(_ text: String) -> Result<[Scope], Problem> {
        var scopes: [Scope] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            guard let scope = Scope(rawValue: part) else {
                return .failure(.invalid([FieldError(field: "scopes", detail: "has unknown scope \"\(part)\" (known: \(Scope.allCases.map(\.rawValue).joined(separator: ", ")))")]))
            }
            if !scopes.contains(scope) { scopes.append(scope) }
        }
        if scopes.isEmpty { return .failure(.invalid([FieldError(field: "scopes", detail: "must name at least one scope")])) }
        return .success(scopes)
    }
}

extension Array where Element == Scope {
    public func grants(_ scope: Scope) -> Bool { contains(.admin) || contains(scope) }
}
