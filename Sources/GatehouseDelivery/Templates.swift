import Foundation
import GatehouseCore
import GatehouseResources
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

/// A template that does not compile, or an override folder that cannot be read.
public struct TemplateError: Error, CustomStringConvertible, Sendable {
    /// The template's path inside the set (`slack/event.mustache`), when one is to blame.
    public var template: String?
    public var description: String
}

/// The templates (chat messages, HTML pages, `pages/annotate.js`): the set compiled into the
/// binary, with every file of the override folders taking precedence, one file at a time
/// (later folders win). Mustache templates are named `<folder>/<name>` for the file
/// `<folder>/<name>.mustache`; partials resolve in the same effective set, so an overridden
/// partial is used by the shipped templates too.
public struct TemplateSet: Sendable {
    let library: MustacheLibrary
    /// Every effective file by path inside the set, with its text.
    let files: [String: String]
    /// Where each effective file came from: `embedded`, or the override file's path.
    public let origins: [String: String]

    /// The embedded set overlaid with `overrides` (folders, in increasing precedence).
    public init(overrides: [String] = []) throws {
        MustacheContentTypes.register(JSONStringContentType(), named: "JSON")
        var files = EmbeddedResources.templates
        var origins = files.mapValues { _ in "embedded" }
        for folder in overrides {
            for (name, path) in try Self.listFiles(in: folder) {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw TemplateError(template: name, description: "template \(name): cannot read \(path)")
                }
                guard let text = String(data: data, encoding: .utf8) else {
                    throw TemplateError(template: name, description: "template \(name) (\(path)) is not UTF-8 text")
                }
                files[name] = text
                origins[name] = path
            }
        }
        var library = MustacheLibrary()
        for (name, text) in files.sorted(by: { $0.key < $1.key }) where name.hasSuffix(".mustache") {
            do {
                library.register(try MustacheTemplate(string: text), named: String(name.dropLast(".mustache".count)))
            } catch let error as MustacheTemplate.ParserError {
                let origin = origins[name] == "embedded" ? "" : " (\(origins[name] ?? ""))"
                throw TemplateError(
                    template: name,
                    description: "template \(name)\(origin) does not compile: line \(error.context.lineNumber), column \(error.context.columnNumber): \(error.error) in `\(error.context.line.trimmingCharacters(in: .whitespaces))`")
            } catch {
                throw TemplateError(template: name, description: "template \(name) does not compile: \(error)")
            }
        }
        self.library = library
        self.files = files
        self.origins = origins
    }

    /// The embedded set overlaid with `directory`, then with `overrides`.
    public init(directory: String, overrides: String? = nil) async throws {
        try self.init(overrides: [directory] + (overrides.map { [$0] } ?? []))
    }

    /// The regular files under `folder` (recursively, hidden ones skipped) as (path inside the
    /// set, path on disk).
    static func listFiles(in folder: String) throws -> [(String, String)] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TemplateError(template: nil, description: "templates: \(folder) is not a directory")
        }
        guard let enumerator = FileManager.default.enumerator(atPath: folder) else { return [] }
        var out: [(String, String)] = []
        for case let relative as String in enumerator {
            if relative.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { continue }
            let path = folder + "/" + relative
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else { continue }
            out.append((relative, path))
        }
        return out.sorted { $0.0 < $1.0 }
    }

    /// The Mustache template names (`slack/event`, `pages/gate`, …) of the effective set.
    public var templateNames: [String] {
        files.keys.filter { $0.hasSuffix(".mustache") }.map { String($0.dropLast(".mustache".count)) }.sorted()
    }

    /// Whether the effective file at `path` has the text compiled into the binary.
    public func isShipped(_ path: String) -> Bool {
        files[path] != nil && files[path] == EmbeddedResources.templates[path]
    }

    /// A file of the set that is served as it is (`pages/annotate.js`).
    public func file(_ path: String) -> String? { files[path] }

    /// Renders an HTML page (`pages/<name>`); `{{value}}` is HTML-escaped by Mustache.
    public func renderHTML(_ name: String, _ context: [String: Any]) throws -> String {
        guard let text = library.render(context, withTemplate: name) else {
            throw DeliveryError("no template \(name)")
        }
        return text
    }

    /// Renders and checks that the result is JSON; returns it compact (the bytes that are sent
    /// and signed).
    public func renderJSON(_ name: String, _ context: [String: Any]) throws -> String {
        guard let text = library.render(context, withTemplate: name) else {
            throw DeliveryError("no template \(name)")
        }
        do {
            return try JSONValue.parse(text).serialized()
        } catch {
            throw DeliveryError("template \(name) did not render valid JSON: \(error)")
        }
    }
}
