import Foundation
import GatehouseClient
import GatehouseCore
import GatehouseDelivery
@testable import GatehouseServer
import GatehouseStore
import Hummingbird
import Logging
import Testing

/// The binary carries its templates and API description: it runs from any directory.
@Suite(.serialized)
struct EmbeddedResourceTests {
    /// An environment in which nothing points at the repository's templates/ folder (an empty
    /// GATEHOUSE_TEMPLATES counts as unset).
    static let noTemplateFolder = ["GATEHOUSE_TEMPLATES": ""]

    @Test func theBinaryServesPagesAndDeliversFromATemporaryDirectory() async throws {
        try await offThePool {
            let sink = try Sink()
            let dir = TempDir()  // the server's working directory: outside the repository, no templates/
            #expect(!FileManager.default.fileExists(atPath: dir.file("templates")))
            let config = dir.write("gatehouse.yml", """
                receivers:
                  - name: audit
                    webhook: { url: \(sink.url("/ok/audit")) }
                route: { receiver: audit, group_by: ['...'] }
                """)
            let server = try ServerProcess(dir: dir, arguments: ["--config", config], environment: Self.noTemplateFolder)

            // A page: /inbox without a session shows the sign-in page, built from pages/login and
            // the pages/style partial.
            let page = try server.get("/inbox")
            #expect(page.status == 200, "\(page.text)")
            #expect(page.text.contains(#"<form method="post" action="/login">"#))
            #expect(page.text.contains("<style"))
            let script = try server.get("/assets/annotate.js")
            #expect(script.status == 200)
            #expect(script.text == (try String(contentsOfFile: templatesFolder + "/pages/annotate.js", encoding: .utf8)))

            // A delivery, rendered with the embedded webhook/event template.
            #expect(try server.post("/v1/events", #"{"id":"anywhere-1","type":"run.failed","pipeline":"train","run":"r1"}"#).status == 202)
            let received = try sink.wait(for: 1, at: "/ok/audit")
            try #require(received.count == 1)
            let body = received[0].json
            #expect(body["kind"]?.stringValue == "event")
            #expect(body["receiver"]?.stringValue == "audit")
            #expect(body["events"]?.arrayValue?.first?.objectValue?["id"]?.stringValue == "anywhere-1")

            // The API description, as JSON.
            let openapi = try server.get("/openapi.json")
            #expect(openapi.status == 200)
            #expect(openapi.header("content-type")?.hasPrefix("application/json") == true)
            #expect(openapi.json["openapi"]?.stringValue?.hasPrefix("3.1") == true)
            #expect(openapi.json["paths"]?.objectValue?["/v1/events"] != nil)
        }
    }

    @Test func aSingleOverriddenTemplateWinsOverTheEmbeddedOne() async throws {
        try await offThePool {
            let sink = try Sink()
            let dir = TempDir()
            try FileManager.default.createDirectory(atPath: dir.file("tpl/webhook"), withIntermediateDirectories: true)
            _ = dir.write("tpl/webhook/event.mustache", #"{{% CONTENT_TYPE: JSON}}{"overridden": true, "receiver": "{{receiver}}"}"#)
            let config = dir.write("gatehouse.yml", """
                templates: \(dir.file("tpl"))
                receivers:
                  - name: audit
                    webhook: { url: \(sink.url("/ok/audit")) }
                route: { receiver: audit, group_by: ['...'] }
                """)
            let server = try ServerProcess(dir: dir, arguments: ["--config", config], environment: Self.noTemplateFolder)
            #expect(try server.post("/v1/events", #"{"type":"run.failed","pipeline":"train","run":"r1"}"#).status == 202)
            let received = try sink.wait(for: 1, at: "/ok/audit")
            try #require(received.count == 1)
            #expect(received[0].json == JSONObject([("overridden", .bool(true)), ("receiver", .string("audit"))]))
            // Everything not overridden still comes from the embedded set.
            let page = try server.get("/inbox")
            #expect(page.status == 200)
            #expect(page.text.contains(#"action="/login""#))
        }
    }

    @Test func configCheckNamesTheTemplateThatDoesNotCompile() async throws {
        try await offThePool {
            let dir = TempDir()
            try FileManager.default.createDirectory(atPath: dir.file("tpl/slack"), withIntermediateDirectories: true)
            _ = dir.write("tpl/slack/gate.mustache", "{{% CONTENT_TYPE: JSON}}\n{\"text\": \"{{#gate_open}}open\"}\n")
            let config = dir.write("gatehouse.yml", """
                templates: \(dir.file("tpl"))
                receivers:
                  - name: team
                    slack: { webhook_url: https://hooks.slack.test/x }
                """)
            let bad = try runCLI(["config", "check", config], environment: Self.noTemplateFolder, directory: dir.path)
            #expect(bad.status != 0)
            #expect(bad.stdout.contains("slack/gate.mustache"), "\(bad.stdout)")
            #expect(bad.stdout.contains("does not compile"), "\(bad.stdout)")

            // Compiles but renders no JSON: named too.
            _ = dir.write("tpl/slack/gate.mustache", "{{% CONTENT_TYPE: JSON}}\n{\"text\": {{gate_title}}\n")
            let broken = try runCLI(["config", "check", config], environment: Self.noTemplateFolder, directory: dir.path)
            #expect(broken.status != 0)
            #expect(broken.stdout.contains("slack/gate"), "\(broken.stdout)")

            // The embedded set alone checks out, from a directory without templates/.
            try FileManager.default.removeItem(atPath: dir.file("tpl/slack/gate.mustache"))
            let good = try runCLI(["config", "check", config], environment: Self.noTemplateFolder, directory: dir.path)
            #expect(good.status == 0, "\(good.stdout)\(good.stderr)")
        }
    }

    /// Every `/v1` route the router knows is in docs/openapi.yaml with its method, and the
    /// document describes no `/v1` operation the router does not have.
    @Test func theOpenAPIDocumentDescribesExactlyTheRoutes() async throws {
        // The routes as the composition root builds them for `serve`.
        let dir = TempDir()
        var config = GatehouseConfig()
        config.storage.sqlite = testDatabase(dir, name: "routes.db")
        config.server.address = "127.0.0.1:0"
        let router = try await GatehouseServer.buildApplication(config: config, logger: Logger(label: "test"), registry: nil).router
        let routed = Set(router.routes.map { "\($0.method.rawValue) \($0.path.description)" }.filter { $0.split(separator: " ")[1].hasPrefix("/v1/") })
        #expect(routed.count > 20)

        let document = try OpenAPIDocument.json(fromYAML: String(contentsOfFile: repositoryRoot + "/docs/openapi.yaml", encoding: .utf8))
        let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
        var documented = Set<String>()
        for (path, item) in document.objectValue?["paths"]?.objectValue ?? JSONObject() where path.hasPrefix("/v1/") {
            for (key, _) in item.objectValue ?? JSONObject() where methods.contains(key) {
                documented.insert("\(key.uppercased()) \(path)")
            }
        }
        #expect(routed.subtracting(documented).sorted() == [], "routes missing from docs/openapi.yaml")
        #expect(documented.subtracting(routed).sorted() == [], "documented operations the router does not have")
        // The served copy is the repository's file.
        let served = try OpenAPIDocument.shipped.get()
        #expect(try JSONValue.parse(bytes: served) == document)
    }

    @Test func yamlBecomesJSONKeepingOrderAndTypes() async throws {
        try await offThePool {
            let json = try OpenAPIDocument.json(fromYAML: """
                openapi: 3.1.0
                info: {title: t, version: "1.0"}
                paths:
                  /a:
                    get:
                      responses:
                        200: {description: ok}
                x-numbers: [1, 2.5, true, null, "3", ~]
                """)
            #expect(json.serialized() == #"{"openapi":"3.1.0","info":{"title":"t","version":"1.0"},"paths":{"/a":{"get":{"responses":{"200":{"description":"ok"}}}}},"x-numbers":[1,2.5,true,null,"3",null]}"#)
        }
    }
}

/// The repository's root folder.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
