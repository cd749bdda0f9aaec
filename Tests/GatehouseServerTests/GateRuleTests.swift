import Foundation
import GatehouseClient
import GatehouseConfigFile
import GatehouseCore
import Testing

/// Event-driven gates: a pipeline only emits an event; a `gates:` rule opens the gate in the
/// event's own commit, and the pipeline waits on the key.
struct GateRuleTests {
    static let rules = """
        gates:
          - name: deploy
            match: ['type="model.registered"', 'env="prod"']
            title: "Deploy {{pipeline}} {{attributes.model}} v{{attributes.version}}?"
            details: "AUC {{attributes.auc}}"
            key: "{{run}}/deploy"
            subject: { kind: model, name: "{{attributes.model}}", version: "{{attributes.version}}", digest: "{{attributes.digest}}" }
            approvers: ["web:bob"]
            timeout: 2h
            on_timeout: reject
            auto_approve: { when: "attributes.auc >= 0.97" }
          - name: any-note
            match: ['type="note.added"']
            title: "Note on {{pipeline}}"
        """

    static func registered(id: String, run: String = "r1", auc: Double = 0.9, digest: String = "sha256:a", model: String? = "churn") -> String {
        var attributes = #""version": 3, "auc": \#(auc), "digest": "\#(digest)""#
        if let model { attributes += #", "model": "\#(model)""# }
        return #"{"id": "\#(id)", "type": "model.registered", "pipeline": "train", "run": "\#(run)", "labels": {"env": "prod"}, "attributes": {\#(attributes)}}"#
    }

    @Test func aMatchingEventOpensTheRenderedGateInItsCommit() async throws {
        try await InProcessServer.with(Self.rules) { server in
            #expect(try await server.post("/v1/events", Self.registered(id: "e1")).status == 202)
            // Committed with the event: no waiting needed.
            let gates = try await server.json("/v1/gates?state=pending")["gates"]?.arrayValue?.compactMap(\.objectValue) ?? []
            #expect(gates.count == 1)
            let gate = try #require(gates.first)
            #expect(gate["title"] == .string("Deploy train churn v3?") && gate["key"] == .string("r1/deploy"))
            #expect(gate["pipeline"] == .string("train") && gate["run"] == .string("r1") && gate["details"] == .string("AUC 0.9"))
            #expect(gate["subject"]?.objectValue?["version"] == .int(3) && gate["subject"]?.objectValue?["digest"] == .string("sha256:a"))
            // The event first, then the gate it opened.
            let types = try await server.allEvents().compactMap { $0["type"]?.stringValue }
            #expect(types == ["model.registered", "gate.opened"])
            let id = try #require(gate["id"]?.stringValue)
            let audit = try await server.json("/v1/gates/\(id)/audit")["entries"]?.arrayValue?.first?.objectValue
            #expect(audit?["detail"]?.objectValue?["via"] == .string("rule:deploy"))

            // The same event again is a duplicate: no second gate. The same key and digest from
            // a new event resumes the gate; a new digest supersedes it.
            #expect(try await server.post("/v1/events", Self.registered(id: "e1")).status == 202)
            #expect(try await server.post("/v1/events", Self.registered(id: "e2")).status == 202)
            #expect(try await server.json("/v1/gates")["gates"]?.arrayValue?.count == 1)
            #expect(try await server.post("/v1/events", Self.registered(id: "e3", digest: "sha256:b")).status == 202)
            let all = try await server.json("/v1/gates")["gates"]?.arrayValue?.compactMap(\.objectValue) ?? []
            #expect(all.map { $0["state"]?.stringValue } .sorted { ($0 ?? "") < ($1 ?? "") } == ["pending", "superseded"])

            // An event another rule matches; a non-matching one opens nothing.
            #expect(try await server.post("/v1/events", #"{"type": "model.registered", "pipeline": "train", "labels": {"env": "dev"}}"#).status == 202)
            #expect(try await server.json("/v1/gates")["gates"]?.arrayValue?.count == 2)
        }
    }

    /// Nobody but the server says a gate was approved: a pipeline able to send `gate.approved`
    /// could resume another one (through CloudEvents) with nobody deciding.
    @Test func gateAndDatasetEventsAreTheServersOwn() async throws {
        try await InProcessServer.with(Self.rules) { server in
            let forged = try await server.post("/v1/events", #"[{"type": "run.failed", "pipeline": "p"}, {"type": "gate.approved", "pipeline": "p", "attributes": {"gate_key": "r1/deploy"}}]"#)
            #expect(forged.status == 422 && forged.json["errors"]?.arrayValue?.first?.objectValue?["index"] == .int(1), "\(forged.text)")
            #expect(try await server.post("/v1/events", #"{"type": "dataset.completed", "pipeline": "p"}"#).status == 422)
            #expect(try await server.allEvents().isEmpty)
        }
    }

    @Test func autoApproveSeesTheTriggeringEvent() async throws {
        try await InProcessServer.with(Self.rules) { server in
            #expect(try await server.post("/v1/events", Self.registered(id: "e1", run: "good", auc: 0.98)).status == 202)
            let gate = try #require(try await server.json("/v1/gates")["gates"]?.arrayValue?.first?.objectValue)
            #expect(gate["state"] == .string("approved") && gate["outcome"]?.objectValue?["by"] == .string("policy:auto"))
            let types = try await server.allEvents().compactMap { $0["type"]?.stringValue }
            #expect(types == ["model.registered", "gate.opened", "gate.approved"])
        }
    }

    @Test func aTemplateTheEventCannotFillRefusesTheEventAndCommitsNothing() async throws {
        try await InProcessServer.with(Self.rules) { server in
            let batch = "[" + Self.registered(id: "ok", run: "r2") + "," + Self.registered(id: "bad", model: nil) + "]"
            let refused = try await server.post("/v1/events", batch)
            #expect(refused.status == 422)
            let errors = refused.json["errors"]?.arrayValue?.compactMap(\.objectValue) ?? []
            #expect(errors.contains { $0["field"] == .string("gates[deploy].title") && $0["index"] == .int(1) }, "\(refused.text)")
            #expect(errors.contains { $0["detail"]?.stringValue?.contains("attributes.model") == true })
            #expect(try await server.allEvents().isEmpty)
            #expect(try await server.json("/v1/gates")["gates"]?.arrayValue?.isEmpty == true)
        }
    }

    @Test func aPipelineWaitsOnTheKeyBeforeTheGateExists() async throws {
        try await InProcessServer.with(Self.rules) { server in
            let port = try #require(server.client.port)
            let base = "http://127.0.0.1:\(port)"
            // Nothing opened with that key: 404 once the wait is over.
            let none = try await server.get("/v1/gates/wait?key=nope&timeout=0s")
            #expect(none.status == 404 && none.text.contains("nope"))
            #expect(try await server.get("/v1/gates/wait?timeout=1s").status == 422)

            // A waiter on its own connection, parked before the event that opens the gate.
            let waiting = Task.detached { () -> (Int, JSONObject) in
                let result = try HTTPClient(timeout: 30).send(method: "GET", url: "\(base)/v1/gates/wait?key=r9%2Fdeploy&timeout=20s")
                return (result.status, (try? JSONValue.parse(bytes: result.body))?.objectValue ?? JSONObject())
            }
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await server.post("/v1/events", Self.registered(id: "w1", run: "r9")).status == 202)
            let id = try #require(try await server.json("/v1/gates?state=pending")["gates"]?.arrayValue?.first?.objectValue?["id"]?.stringValue)
            // A new digest supersedes it; the wait follows the key to the new gate.
            #expect(try await server.post("/v1/events", Self.registered(id: "w2", run: "r9", digest: "sha256:z")).status == 202)
            let newer = try #require(try await server.json("/v1/gates?state=pending")["gates"]?.arrayValue?.first?.objectValue?["id"]?.stringValue)
            #expect(newer != id)
            #expect(try await server.post("/v1/gates/\(newer)/decisions", #"{"decision": "approve", "by": "web:bob"}"#).status == 200)
            let (status, gate) = try await waiting.value
            #expect(status == 200 && gate["id"] == .string(newer) && gate["state"] == .string("approved"))
        }
    }

    @Test func configCheckFindsBadRulesAtTheirLines() {
        let loaded = ConfigLoader(environment: [:]).load(yaml: """
            gates:
              - name: a
                match: ['type="x"']
                title: "{{#attributes}}nope{{/attributes}}"
              - name: b
                match: ['type="x"']
                title: "T"
                timout: 2h
              - name: c
                title: "{{pipeline"
              - name: d
                match: ['type="x"']
                title: "T"
                inputs: [{name: share, type: integer, min: 0.2, max: 0.8}]
              - name: e
                match: ['type="x"']
                title: "T"
                inputs: [{name: share, type: integer, min: "{{attributes.low}}", max: 10}]
              - name: f
                match: ['type="x"']
                title: "{{pipeline}}"
                timeout: 0s
                on_timeout: maybe
              - name: h
                match: ['type="x"']
                title: "T"
                choices: [canary, full]
                required_approvals: 2
              - name: g
                match: ['type="x"']
                title: "T"
                approvers: "{{attributes.approvers}}"
                required_approvals: 2
            """)
        let messages = loaded.issues.map { "\($0.line): \($0.message)" }
        // Bounds no value meets are a config error (they would refuse every matching event);
        // bounds an event fills in are checked with that event.
        #expect(messages.contains { $0.contains("gates[d].inputs[0].min leaves no whole number up to max (0.8)") }, "\(messages)")
        #expect(!messages.contains { $0.contains("gates[e]") }, "\(messages)")
        // Every fixed field is checked as the API checks a gate; a quorum whose approvers an
        // event fills in waits for the event.
        for field in ["timeout", "on_timeout"] {
            #expect(messages.contains { $0.contains("gates[f].\(field) ") }, "\(field): \(messages)")
        }
        #expect(messages.contains { $0.contains("gates[h].required_approvals applies to approve/reject gates") }, "\(messages)")
        #expect(!messages.contains { $0.contains("gates[g]") }, "\(messages)")

        // The same for labelling rules, and a receiver that could send nothing.
        let more = ConfigLoader(environment: [:]).load(yaml: """
            receivers:
              - name: r
                max_age: 0s
                webhook: { url: http://127.0.0.1:1/x }
            route: { receiver: r }
            labelling:
              - name: l
                match: ['type="x"']
                dataset: "bad name!"
                labels: []
                items: attributes.items
              - name: m
                match: ['type="x"']
                dataset: "{{pipeline}}-review"
                labels: [a, b]
                items: attributes.items
            """).issues.map(\.message)
        #expect(more.contains { $0.hasPrefix("labelling[l].dataset ") } && more.contains { $0.hasPrefix("labelling[l].labels ") }, "\(more)")
        #expect(!more.contains { $0.contains("labelling[m]") }, "\(more)")
        #expect(more.contains { $0.contains("max_age must be more than 0s") }, "\(more)")
        #expect(messages.contains { $0.hasPrefix("4: gates[0].title uses {{#attributes}}") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("8: unknown key \"timout\" in gates[1] (did you mean timeout?)") }, "\(messages)")
        #expect(messages.contains { $0.contains("gates[2].title has a {{ without its }}") }, "\(messages)")
        #expect(messages.contains { $0.contains("gates[c] needs match") }, "\(messages)")
    }

    @Test func templatesKeepTypesAndRefuseWhatIsMissing() throws {
        let context = try #require(try JSONValue.parse(#"{"pipeline": "p", "attributes": {"n": 2, "people": ["web:a"], "v": "1.0"}}"#).objectValue)
        #expect(try EventTemplate.render(.string("{{attributes.n}}"), context: context) == .int(2))
        #expect(try EventTemplate.render(.string(" {{ attributes.people }} "), context: context) == .array([.string("web:a")]))
        #expect(try EventTemplate.render(.string("{{pipeline}} v{{attributes.v}} x{{attributes.n}}"), context: context) == .string("p v1.0 x2"))
        #expect(throws: EventTemplate.RenderError.self) { try EventTemplate.render(.string("{{attributes.gone}}"), context: context) }
        #expect(try EventTemplate.render(.array([.string("{{pipeline}}"), .int(1)]), context: context) == .array([.string("p"), .int(1)]))
    }

    /// The CLI waits on a key: exit 2 while nothing opened it, then 0 once the rule's gate is
    /// approved — and the gate survives a kill -9 right after the event's 202.
    @Test func gateWaitByKeyFromTheCLIAndAfterAKill() async throws {
        try await offThePool {
            let dir = TempDir()
            let config = dir.write("gatehouse.yml", Self.rules + "\n" + Self.labelling)
            var server = try ServerProcess(dir: dir, arguments: ["--config", config])
            let early = try runCLI(["gate", "wait", "--key", "k1/deploy", "--timeout", "1s"], environment: ["GATEHOUSE_URL": server.url])
            #expect(early.status == 2 && early.stderr.contains("no gate with key k1/deploy"), "\(early.stderr)")
            #expect(try server.post("/v1/events", Self.registered(id: "k", run: "k1")).status == 202)
            #expect(try server.post("/v1/events", Self.predictions(id: "pk", items: ["i1", "i2"])).status == 202)
            server.kill()
            server = try ServerProcess(dir: dir, db: server.db, arguments: ["--config", config])
            let gate = try #require(try JSONValue.parse(server.get("/v1/gates?state=pending").text).objectValue?["gates"]?.arrayValue?.first?.objectValue)
            #expect(gate["key"] == .string("k1/deploy"))
            let dataset = try JSONValue.parse(server.get("/v1/datasets/review-sentiment").text).objectValue
            #expect(dataset?["items"] == .int(2))
            _ = try server.post("/v1/gates/\(gate["id"]!.stringValue!)/decisions", #"{"decision": "approve", "by": "web:bob"}"#)
            let done = try runCLI(["gate", "wait", "--key", "k1/deploy", "--timeout", "5s"], environment: ["GATEHOUSE_URL": server.url])
            #expect(done.status == 0 && done.stderr.contains("approved"), "\(done.stderr)")

            // routes test shows the gate an event would open, or why it would be refused.
            let shown = try runCLI(["routes", "test", "--offline", "--config", config, Self.registered(id: "x", run: "r5")])
            #expect(shown.status == 0 && shown.stdout.contains("opens gate by rule deploy") && shown.stdout.contains("key       r5/deploy"), "\(shown.stdout)")
            let refused = try runCLI(["routes", "test", "--offline", "--config", config, Self.registered(id: "x", model: nil)])
            #expect(refused.status != 0 && refused.stdout.contains("gates[deploy].title uses {{attributes.model}}"), "\(refused.stdout)")
        }
    }

    static let labelling = """
        labelling:
          - name: review
            match: ['type="predictions.ready"']
            dataset: "review-{{pipeline}}"
            task: classification
            labels: [pos, neg, neutral]
            annotators_per_item: 2
            instructions: "Low-confidence predictions of {{pipeline}}"
            items: attributes.items
        """

    static func predictions(id: String, pipeline: String = "sentiment", items: [String]) -> String {
        let list = items.map { #"{"id": "\#($0)", "data": {"text": "text \#($0)"}}"# }.joined(separator: ",")
        return #"{"id": "\#(id)", "type": "predictions.ready", "pipeline": "\#(pipeline)", "attributes": {"items": [\#(list)]}}"#
    }

    /// A labelling rule creates its dataset on first use and adds the event's items, in the
    /// event's commit; later events extend it, idempotent by item id; bad items refuse the event.
    @Test func labellingRulesCreateAndExtendDatasets() async throws {
        try await InProcessServer.with(Self.labelling) { server in
            #expect(try await server.post("/v1/events", Self.predictions(id: "p1", items: ["a", "b"])).status == 202)
            let info = try await server.json("/v1/datasets/review-sentiment")
            #expect(info["items"] == .int(2) && info["annotators_per_item"] == .int(2) && info["task"] == .string("classification"))
            #expect(info["instructions"] == .string("Low-confidence predictions of sentiment"))
            #expect(try await server.post("/v1/events", Self.predictions(id: "p2", items: ["b", "c"])).status == 202)
            #expect(try await server.json("/v1/datasets/review-sentiment")["items"] == .int(3))
            let types = try await server.allEvents().compactMap { $0["type"]?.stringValue }
            #expect(types == ["predictions.ready", "dataset.items_added", "predictions.ready", "dataset.items_added"])

            // An item the dataset cannot take refuses the event, naming the rule and the item.
            let bad = #"{"type": "predictions.ready", "pipeline": "sentiment", "attributes": {"items": [{"id": "d", "data": {}}]}}"#
            let refused = try await server.post("/v1/events", bad)
            #expect(refused.status == 422 && refused.text.contains("labelling[review].items[0].data"), "\(refused.text)")
            let missing = try await server.post("/v1/events", #"{"type": "predictions.ready", "pipeline": "sentiment"}"#)
            #expect(missing.status == 422 && missing.text.contains("labelling[review].items"))
            #expect(try await server.allEvents().count == 4)

            // A dataset of the same name made by hand with another definition: the event is
            // refused with a 409 rather than mixed into it.
            #expect(try await server.post("/v1/datasets", #"{"name": "review-other", "task": "classification", "labels": ["x", "y"]}"#).status == 201)
            let clash = try await server.post("/v1/events", Self.predictions(id: "p3", pipeline: "other", items: ["z"]))
            #expect(clash.status == 409 && clash.text.contains("labelling rule review"), "\(clash.text)")
            #expect(try await server.json("/v1/datasets/review-other")["items"] == .int(0))
        }
    }
}
