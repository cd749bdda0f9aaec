// Turns text files into a Swift source of string literals, so they are compiled into the
// binary. Run by the EmbedFilesPlugin build-tool plugin on every build that changed one of them:
//
//     EmbedFiles OUTPUT.swift ROOT NAME...
//
// reads ROOT/NAME for every NAME (a path relative to ROOT, with `/`) and writes
// `enum EmbeddedFiles { static let files: [String: String] }` keyed by NAME.
import Foundation

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("EmbedFiles: \(message)\n".utf8))
    exit(1)
}

/// A Swift string literal holding exactly `text`: quotes, backslashes and every control
/// character escaped, so no content can end the literal or start an interpolation.
func literal(_ text: String) -> String {
    var out = "\""
    out.reserveCapacity(text.utf8.count + text.utf8.count / 8 + 2)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\0": out += "\\0"
        default:
            if scalar.value < 0x20 || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value)
                || scalar.value == 0x2028 || scalar.value == 0x2029 {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

// An @main type, not main.swift: it builds the same with or without -parse-as-library (the
// fuzz build passes that flag to every module).
@main
enum EmbedFiles {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard arguments.count >= 2 else { fail("usage: EmbedFiles OUTPUT.swift ROOT NAME...") }
        let output = arguments[arguments.startIndex]
        let root = arguments[arguments.startIndex + 1]
        let names = arguments.dropFirst(2).sorted()

        var source = """
            // Generated at build time by the EmbedFilesPlugin build-tool plugin from the package's files.
            // Do not edit: edit the files themselves (`templates/`, `docs/openapi.yaml`).

            /// The files compiled into the binary, keyed by their path in the repository.
            public enum EmbeddedFiles {
                public static let files: [String: String] = [

            """
        for name in names {
            let path = root + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else { fail("cannot read \(path)") }
            guard let text = String(data: data, encoding: .utf8) else { fail("\(path) is not UTF-8 text") }
            source += "        \(literal(name)): \(literal(text)),\n"
        }
        if names.isEmpty { source += "        :\n" }
        source += "    ]\n}\n"

        // Only rewrite when the content changed: an unchanged file keeps dependants from recompiling.
        if FileManager.default.contents(atPath: output) != Data(source.utf8) {
            do {
                try Data(source.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
            } catch {
                fail("cannot write \(output): \(error)")
            }
        }
    }
}
