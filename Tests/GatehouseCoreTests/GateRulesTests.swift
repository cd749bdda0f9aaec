import GatehouseCore
import Testing

struct GateRulesTests {
    static let t0 = Timestamp(milliseconds: 1_795_946_400_000)

    func spec(_ json: String) throws -> GateSpec {
        try GateSpec.parse(JSONValue.parse(json)).get()
    }

    func decision(_ by: String, _ d: String = "approve", inputs: JSONObject? = nil, at offset: Int64 = 1000) -> GateDecision {
        GateDecision(by: by, decision: d, inputs: inputs, via: "api", at: Self.t0.adding(milliseconds: offset))
    }

    @Test func parsesTheContractExample() throws {
        let s = try spec("""
            { "title": "Deploy fraud-model v7 to production?", "details": "AUC 0.91 (+0.02)",
              "pipeline": "train", "run": "r42", "step": "deploy", "key": "r42/deploy",
              "subject": {"kind": "model", "name": "fraud-model", "version": "7", "digest": "sha256:abc"},
              "choices": ["approve", "reject"], "inputs": [{"name": "traffic_percent", "type": "integer", "min": 1, "max": 100, "default": 10}],
              "required_approvals": 2, "approvers": ["slack:U024BE7LH", "mattermost:@alice", "web:bob"],
              "requested_by": "web:carol", "allow_self_approval": false,
              "timeout": "2h", "on_timeout": "reject", "remind_every": "30m",
              "escalate_after": "1h", "escalate_to": ["ops"], "labels": {"team": "risk"} }
            """)
        #expect(s.requiredApprovals == 2 && s.subjectDigest == "sha256:abc" && !s.isBranching)
        #expect(s.timeout?.milliseconds == 7_200_000 && s.onTimeout == .reject && s.escalateTo == ["ops"])
        #expect(s.inputs.first?.defaultValue == .int(10))
        // The stored form reads back to the same spec.
        #expect(GateSpec(stored: s.json) == s)
    }

    @Test func refusesBadSpecsNamingEachField() throws {
        let result = GateSpec.parse(try JSONValue.parse("""
            {"pipeline": "p", "timout": "2h", "timeout": "soon", "approvers": ["bob"], "on_timeout": "maybe",
             "escalate_after": "1h", "inputs": [{"name": "n", "type": "integer", "min": 5, "default": 1}],
             "auto_approve": {"when": "attributes.auc >="}, "required_approvals": 0}
            """))
        guard case .failure(let problem) = result else { Issue.record("accepted a bad spec"); return }
        let fields = Set(problem.errors.map(\.field))
        for field in ["title", "timout", "timeout", "approvers[0]", "on_timeout", "escalate_to", "inputs[0].default", "auto_approve.when", "required_approvals"] {
            #expect(fields.contains(field), "missing \(field) in \(problem.errors)")
        }
    }

    @Test func quorumCountsEachIdentityOnce() throws {
        var gate = Gate(id: "g", spec: try spec(#"{"title": "t", "required_approvals": 2, "approvers": ["*"]}"#), createdAt: Self.t0)
        #expect(gate.apply(decision("slack:U1")) == .success(.counted))
        #expect(gate.apply(decision("slack:U1")) == .success(.duplicate))
        #expect(gate.state == .pending && gate.approvals == ["slack:U1"])
        #expect(gate.apply(decision("discord:9")) == .success(.closed))
        #expect(gate.state == .approved && gate.outcome?.by == "discord:9")
        // First closing decision wins; later ones learn the outcome.
        guard case .failure(.closed(let outcome)) = gate.apply(decision("web:late", "reject")) else { Issue.record("late decision accepted"); return }
        #expect(outcome?.state == .approved)
        #expect(outcome.map { Gate.Refusal.closed($0).problem.status } == 409)
    }

    @Test func onlyApproversAndNeverTheRequester() throws {
        var gate = Gate(id: "g", spec: try spec(#"{"title": "t", "approvers": ["web:bob", "web:carol", "mattermost:@alice"], "requested_by": "web:carol"}"#), createdAt: Self.t0)
        guard case .failure(.forbidden) = gate.apply(decision("web:eve")) else { Issue.record("unlisted approver accepted"); return }
        guard case .failure(.forbidden(let why)) = gate.apply(decision("web:carol")) else { Issue.record("self-approval accepted"); return }
        #expect(why.contains("requested this gate"))
        // A Mattermost user listed by @name is recognised through the alias.
        #expect(gate.apply(decision("mattermost:u123"), aliases: ["mattermost:@alice"]) == .success(.closed))

        var allowed = Gate(id: "g2", spec: try spec(#"{"title": "t", "approvers": ["web:carol"], "requested_by": "web:carol", "allow_self_approval": true}"#), createdAt: Self.t0)
        #expect(allowed.apply(decision("web:carol")) == .success(.closed))
    }

    @Test func oneRejectionRejectsAndBranchesCloseOnTheFirstChoice() throws {
        var gate = Gate(id: "g", spec: try spec(#"{"title": "t", "required_approvals": 3}"#), createdAt: Self.t0)
        #expect(gate.apply(decision("web:a")) == .success(.counted))
        #expect(gate.apply(decision("web:b", "reject")) == .success(.closed))
        #expect(gate.state == .rejected)

        var branch = Gate(id: "b", spec: try spec(#"{"title": "t", "choices": ["canary", "full", "reject"], "required_approvals": 2}"#), createdAt: Self.t0)
        #expect(branch.spec.isBranching)
        guard case .failure(.invalid(let errors)) = branch.apply(decision("web:a", "approve")) else { Issue.record("unknown choice accepted"); return }
        #expect(errors.first?.field == "decision")
        #expect(branch.apply(decision("web:a", "canary")) == .success(.closed))
        #expect(branch.state == .approved && branch.outcome?.choice == "canary")
    }

    @Test func inputsAreTypedAndBounded() throws {
        var gate = Gate(id: "g", spec: try spec("""
            {"title": "t", "inputs": [{"name": "traffic_percent", "type": "integer", "min": 1, "max": 100, "default": 10},
                                      {"name": "note", "type": "string", "required": true}]}
            """), createdAt: Self.t0)
        let cases: [(JSONObject, String)] = [
            (JSONObject([("traffic_percent", .int(500)), ("note", .string("x"))]), "inputs.traffic_percent"),
            (JSONObject([("traffic_percent", .number("2.5")), ("note", .string("x"))]), "inputs.traffic_percent"),
            (JSONObject([("traffic", .int(5)), ("note", .string("x"))]), "inputs.traffic"),
            (JSONObject([("traffic_percent", .int(5))]), "inputs.note"),
        ]
        for (inputs, field) in cases {
            guard case .failure(.invalid(let errors)) = gate.apply(decision("web:a", inputs: inputs)) else { Issue.record("accepted \(inputs)"); continue }
            #expect(errors.map(\.field).contains(field), "\(errors)")
        }
        #expect(gate.state == .pending && gate.decisions.isEmpty)
        #expect(gate.apply(decision("web:a", inputs: JSONObject([("traffic_percent", .int(25)), ("note", .string("go"))]))) == .success(.closed))
        #expect(gate.inputValues["traffic_percent"] == .int(25))
    }

    /// Bounds no value meets made a gate nobody could approve (a hostile tester's find): every
    /// approval was a 422 and only a rejection or the timeout could close it.
    @Test func boundsThatNoValueMeetsAreRefusedWhenTheGateIsOpened() throws {
        for (input, detail) in [(#""type": "integer", "min": 10, "max": 1"#, "must not be greater than max (1)"),
                                (#""type": "number", "min": 0.5, "max": 0.25"#, "must not be greater than max (0.25)"),
                                (#""type": "integer", "min": 1.2, "max": 1.8"#, "leaves no whole number up to max (1.8)")] {
            let json = try JSONValue.parse(#"{"title": "t", "inputs": [{"name": "a", \#(input)}]}"#)
            guard case .failure(let problem) = GateSpec.parseNew(json) else { Issue.record("accepted \(input)"); continue }
            #expect(problem.errors.map { "\($0.field) \($0.detail)" } == ["inputs[0].min \(detail)"])
            // A gate stored before the rule still reads back.
            #expect(throws: Never.self) { try GateSpec.parse(json).get() }
        }
        for input in [#""type": "integer", "min": 3, "max": 3"#, #""type": "integer", "min": 1.5, "max": 2"#, #""type": "number", "min": -1, "max": 1e300"#] {
            #expect(throws: Never.self) { try GateSpec.parseNew(try JSONValue.parse(#"{"title": "t", "inputs": [{"name": "a", \#(input)}]}"#)).get() }
        }
    }

    @Test func expiryAppliesOnTimeoutAndNamesNoOne() throws {
        for (onTimeout, state) in [("reject", GateState.rejected), ("approve", .approved), ("expire", .expired)] {
            var gate = Gate(id: "g", spec: try spec(#"{"title": "t", "timeout": "1h", "on_timeout": "\#(onTimeout)"}"#), createdAt: Self.t0)
            #expect(gate.expiresAt == Self.t0.adding(milliseconds: 3_600_000))
            #expect(gate.nextDeadline == gate.expiresAt)
            gate.expire(at: gate.expiresAt!)
            #expect(gate.state == state && gate.outcome?.reason == .timeout && gate.outcome?.by == nil)
            #expect(gate.nextDeadline == nil)
        }
    }
}

struct PolicyExpressionTests {
    let context = JSONObject([
        ("attributes", .object(JSONObject([("auc", .number("0.91")), ("stage", .string("prod")), ("checks", .bool(true))]))),
        ("labels", .object(JSONObject([("team", .string("risk"))]))),
    ])

    @Test func evaluatesComparisonsAndLogic() throws {
        let truths: [(String, Bool)] = [
            ("attributes.auc >= 0.9", true),
            ("attributes.auc > 0.95", false),
            ("attributes.auc >= 0.9 and labels.team == \"risk\"", true),
            ("attributes.auc >= 0.95 or attributes.stage == 'prod'", true),
            ("not (attributes.stage == \"prod\")", false),
            ("attributes.checks", true),
            ("attributes.checks == true and attributes.missing == null", true),
            ("attributes.missing > 1", false),
            ("attributes.stage > 1", false),
            ("(attributes.auc >= 0.9 or false) and not attributes.missing", true),
        ]
        for (text, expected) in truths {
            #expect(try PolicyExpression(text).evaluate(context) == expected, "\(text)")
        }
    }

    @Test func refusesAnythingElse() {
        for text in ["attributes.auc >=", "system('rm -rf /')", "attributes.auc => 1", "(a == 1", "a == \"open", "a and", "1 + 1", ""] {
            #expect(throws: PolicyExpression.ParseError.self, "\(text)") { try PolicyExpression(text) }
        }
    }
}

struct MarkdownTests {
    @Test func rendersTheBasicsAndNeverRawHTML() {
        let html = Markdown.html("""
            **AUC** 0.91 *up* `x<y`
            <script>alert(1)</script>

            - one
            - [docs](https://example.org/a?b=1&c=2)
            - [bad](javascript:alert(1))
            """)
        #expect(html.contains("<strong>AUC</strong>") && html.contains("<em>up</em>") && html.contains("<code>x&lt;y</code>"))
        #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>"))
        #expect(html.contains("<ul><li>one</li>"))
        #expect(html.contains("<a href=\"https://example.org/a?b=1&amp;c=2\" rel=\"noopener noreferrer nofollow\">docs</a>"))
        #expect(!html.contains("href=\"javascript"))
        #expect(Markdown.html("\" onmouseover=\"x").contains("&quot; onmouseover=&quot;x"))
    }

    /// `## Results` was shown literally on the gate page; headings render below the page's own
    /// h1 and h2, and what is not a heading (`#hashtag`, `####### x`) stays text.
    @Test func headingsRenderBelowThePagesOwn() {
        let html = Markdown.html("# Model\nintro\n## Results ##\n**AUC** 0.91\n###### deep\n####### seven\n#hashtag\n# <b>x</b>")
        #expect(html.contains("<h3>Model</h3>\n<p>intro</p>\n<h4>Results</h4>\n<p><strong>AUC</strong> 0.91</p>\n<h6>deep</h6>"))
        #expect(html.contains("<p>####### seven<br>#hashtag</p>"))
        #expect(html.contains("<h3>&lt;b&gt;x&lt;/b&gt;</h3>"))
    }
}
