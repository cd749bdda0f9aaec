/// The files the server needs at run time, compiled into the binary by the EmbedFilesPlugin
/// build-tool plugin (the generated `EmbeddedFiles`), so `gatehouse` runs from any directory.
public enum EmbeddedResources {
    /// The shipped `templates/` folder, keyed by path inside it (`slack/event.mustache`,
    /// `pages/annotate.js`).
    public static let templates: [String: String] = {
        var out: [String: String] = [:]
        for (name, text) in EmbeddedFiles.files where name.hasPrefix("templates/") {
            out[String(name.dropFirst("templates/".count))] = text
        }
        return out
    }()

    /// `docs/openapi.yaml`: the HTTP API, served as JSON at `GET /openapi.json`.
    public static var openAPIYAML: String { EmbeddedFiles.files["docs/openapi.yaml"] ?? "" }
}
