import Foundation
import PackagePlugin

/// Compiles the files the server reads at run time (`templates/**`, `docs/openapi.yaml`) into
/// the target it is applied to, as `EmbeddedFiles.files` (see Sources/EmbedFiles). SwiftPM runs
/// the command whenever one of the files changes, so editing a template needs no manual step;
/// the list of files is taken anew on every build, so added and removed files count too.
@main
struct EmbedFilesPlugin: BuildToolPlugin {
    /// What is embedded, relative to the package root: folders (recursively) and single files.
    static let roots = ["templates", "docs/openapi.yaml"]

    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let root = context.package.directoryURL
        var names: [String] = []
        let fm = FileManager.default
        for entry in Self.roots {
            let url = root.appendingPathComponent(entry)
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
                throw EmbedError("\(entry) is missing from the package")
            }
            guard isDirectory.boolValue else {
                names.append(entry)
                continue
            }
            guard let enumerator = fm.enumerator(atPath: url.path) else { continue }
            for case let relative as String in enumerator {
                // Skip hidden files (editor swap files, .DS_Store), the folders' READMEs and
                // folders themselves.
                if relative.split(separator: "/").contains(where: { $0.hasPrefix(".") }) { continue }
                if relative.hasSuffix("README.md") { continue }
                var isDir: ObjCBool = false
                guard fm.fileExists(atPath: url.appendingPathComponent(relative).path, isDirectory: &isDir), !isDir.boolValue else { continue }
                names.append(entry + "/" + relative)
            }
        }
        names.sort()
        let output = context.pluginWorkDirectoryURL.appendingPathComponent("EmbeddedFiles.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(names.count) files into \(target.name)",
                executable: try context.tool(named: "EmbedFiles").url,
                arguments: [output.path, root.path] + names,
                inputFiles: names.map { root.appendingPathComponent($0) },
                outputFiles: [output])
        ]
    }
}

struct EmbedError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
