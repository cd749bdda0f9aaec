import Foundation
import GatehouseCore
@testable import GatehouseDelivery
import GatehouseResources
import Testing

/// The templates compiled into the binary, and overrides of single files.
@Suite struct TemplateSetTests {
    /// A scratch folder for override files.
    final class Folder {
        let path = NSTemporaryDirectory() + "gatehouse-tpl-" + UUID().uuidString.prefix(8)
        init() { try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        func write(_ name: String, _ text: String) {
            let file = path + "/" + name
            try! FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: file, contents: Data(text.utf8))
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    @Test func everyShippedFileIsEmbeddedVerbatim() throws {
        let enumerator = FileManager.default.enumerator(atPath: templatesFolder)!
        var shipped: [String] = []
        for case let relative as String in enumerator {
            var isDirectory: ObjCBool = false
            FileManager.default.fileExists(atPath: templatesFolder + "/" + relative, isDirectory: &isDirectory)
            guard !isDirectory.boolValue, !relative.hasSuffix("README.md") else { continue }
            shipped.append(relative)
            let onDisk = try String(contentsOfFile: templatesFolder + "/" + relative, encoding: .utf8)
            #expect(EmbeddedResources.templates[relative] == onDisk, "\(relative) differs from the embedded copy")
        }
        #expect(shipped.count >= 20)
        #expect(Set(EmbeddedResources.templates.keys) == Set(shipped))
        let set = try TemplateSet()
        #expect(set.templateNames.contains("slack/event"))
        #expect(set.templateNames.contains("pages/gate"))
        #expect(set.file("pages/annotate.js") == EmbeddedResources.templates["pages/annotate.js"])
        #expect(set.origins.values.allSatisfy { $0 == "embedded" })
    }

    @Test func anOverriddenFileWinsAndTheRestStayEmbedded() throws {
        let folder = Folder()
        folder.write("webhook/event.mustache", #"{{% CONTENT_TYPE: JSON}}{"custom": "{{receiver}}"}"#)
        // An overridden partial is used by the embedded pages that include it.
        folder.write("pages/style.mustache", "<style>/* overridden style */</style>")
        folder.write("pages/annotate.js", "console.log('overridden');")
        let set = try TemplateSet(overrides: [folder.path])
        #expect(try set.renderJSON("webhook/event", ["receiver": "a\"b"]) == #"{"custom":"a\"b"}"#)
        #expect(set.origins["webhook/event.mustache"] == folder.path + "/webhook/event.mustache")
        #expect(set.origins["webhook/digest.mustache"] == "embedded")
        let login = try set.renderHTML("pages/login", ["next": "/inbox"])
        #expect(login.contains("overridden style"))
        #expect(login.contains(#"action="/login""#))
        #expect(set.file("pages/annotate.js") == "console.log('overridden');")
        #expect(set.templateNames.contains("webhook/digest"))
        // The webhook receiver writes shipped bodies directly, but an override is rendered.
        let receiver = try WebhookReceiver(name: "hook", url: Secret("http://127.0.0.1:1/h"), secret: nil, templates: set)
        #expect(receiver.shipped == ["digest", "resolved", "gate"])
        let body = try receiver.request(for: GoldenTests.sample(), now: Timestamp(milliseconds: 0)).body
        #expect(String(decoding: body, as: UTF8.self) == #"{"custom":"example"}"#)
    }

    @Test func laterFoldersWin() throws {
        let first = Folder(), second = Folder()
        first.write("pages/login.mustache", "first")
        first.write("pages/inbox.mustache", "inbox from first")
        second.write("pages/login.mustache", "second")
        let set = try TemplateSet(overrides: [first.path, second.path])
        #expect(try set.renderHTML("pages/login", [:]) == "second")
        #expect(try set.renderHTML("pages/inbox", [:]) == "inbox from first")
    }

    @Test func aTemplateThatDoesNotCompileIsNamed() throws {
        let folder = Folder()
        folder.write("slack/gate.mustache", "{\"text\": \"{{#gate_open}}open\"}\n")
        do {
            _ = try TemplateSet(overrides: [folder.path])
            Issue.record("an unclosed section compiled")
        } catch let error as TemplateError {
            #expect(error.template == "slack/gate.mustache")
            #expect(error.description.contains("slack/gate.mustache"))
            #expect(error.description.contains(folder.path))
        }
    }

    @Test func aMissingOverrideFolderIsAnError() {
        #expect(throws: TemplateError.self) { try TemplateSet(overrides: ["/nonexistent/gatehouse-templates"]) }
    }
}
