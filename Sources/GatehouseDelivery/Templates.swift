import Foundation
import GatehouseCore
import Mustache

/// Escapes values for the inside of a JSON string: `{{x}}` in a template that declares
/// `{{% CONTENT_TYPE: JSON}}` can never break out of its quotes.
struct JSONStringContentType: MustacheContentType {
    func escapeText(_ text: String) -> String {
        var out = ""
        JSONValue.writeString(text, to: &out)
        return String(out.dropFirst().dropLast())
    }
}

/// The message templates: the shipped set, with any file of an override directory taking
/// precedence. Templates are named `<platform>/<kind>` (files `<platform>/<kind>.mustache`).
public struct TemplateSet: Sendable {
    let shipped: MustacheLibrary
    let overrides: MustacheLibrary?
    public let directory: String


    public init(directory: String, overrides: String? = nil) async throws {
        MustacheContentTypes.register(JSONStringContentType(), named: "JSON")
        self.directory = directory
        shipped = try await MustacheLibrary(directory: directory)
        if let overrides { self.overrides = try await MustacheLibrary(directory: overrides) } else { self.overrides = nil }
    }

    /// Where the shipped templates are: `$GATEHOUSE_TEMPLATES`, `./templates`, then next to
    /// the binary (`../share/gatehouse/templates`) and `/usr/share/gatehouse/templates`.
    public static func locateShipped() -> String? {
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["GATEHOUSE_TEMPLATES"] { candidates.append(env) }
        candidates.append(FileManager.default.currentDirectoryPath + "/templates")
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        candidates.append(exe.appendingPathComponent("../share/gatehouse/templates").standardized.path)
        candidates.append("/usr/share/gatehouse/templates")
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/slack/event.mustache") }
    }

    /// Renders an HTML page (`pages/<name>`); `{{value}}` is HTML-escaped by Mustache.
    public func renderHTML(_ name: String, _ context: [String: Any]) throws -> String {
        guard let text = overrides?.render(context, withTemplate: name) ?? shipped.render(context, withTemplate: name) else {
            throw DeliveryError("no template \(name) in \(directory)")
        }
        return text
    }

    /// Renders and checks that the result is JSON; returns it compact (the bytes that are sent
    /// and signed).
    public func renderJSON(_ name: String, _ context: [String: Any]) throws -> String {
        guard let text = overrides?.render(context, withTemplate: name) ?? shipped.render(context, withTemplate: name) else {
            throw DeliveryError("no template \(name) in \(directory)")
        }
        do {
            return try JSONValue.parse(text).serialized()
        } catch {
            throw DeliveryError("template \(name) did not render valid JSON: \(error)")
        }
    }

}
