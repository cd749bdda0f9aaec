import Foundation
import GatehouseClient
import GatehouseCore
import Testing

@Suite(.serialized)
struct CLITests {
    @Test func emitRunsAndExitCodes() async throws {
        try await offThePool {
            let server = try ServerProcess()
            let env = ["GATEHOUSE_URL": server.url]
            var r = try runCLI(["emit", "--type", "run.started", "--pipeline", "train", "--run", "r42", "--id", "x1",
                                "--label", "team=ml", "--attr", "auc=0.91", "--attr", "note=plain text"], environment: env)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout == "x1\n")
            r = try runCLI(["emit", "--type", "step.failed", "--pipeline", "train", "--run", "r42", "--step", "fit", "--summary", "OOM"], environment: env)
            #expect(r.status == 0)

            let stored = try server.allEvents()
            #expect(stored.count == 2)
            #expect(stored[0]["labels"] == .object(JSONObject([("team", .string("ml"))])))
            #expect(stored[0]["attributes"] == .object(JSONObject([("auc", .number("0.91")), ("note", .string("plain text"))])))
            #expect(stored[1]["severity"] == .string("error"))

            // The same event re-sent is reported as a duplicate, not an error…
            r = try runCLI(["emit", "--type", "run.started", "--pipeline", "train", "--run", "r42", "--id", "x1",
                            "--label", "team=ml", "--attr", "auc=0.91", "--attr", "note=plain text"], environment: env)
            #expect(r.status == 0)
            #expect(r.stderr.contains("duplicate"))
            // …another event under its id is refused, saying why.
            r = try runCLI(["emit", "--type", "run.started", "--pipeline", "train", "--run", "r42", "--id", "x1"], environment: env)
            #expect(r.status != 0)
            #expect(r.stderr.contains("already used"))

            // --json from a file (array) and from stdin (NDJSON).
            let dir = TempDir()
            let file = dir.write("events.json", #"[{"type":"a.b","pipeline":"f"},{"type":"a.c","pipeline":"f"}]"#)
            r = try runCLI(["emit", "--json", file], environment: env)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.split(separator: "\n").count == 2)
            r = try runCLI(["emit", "--json", "-"], environment: env, stdin: "{\"type\":\"a.b\",\"pipeline\":\"s\"}\n{\"type\":\"a.b\",\"pipeline\":\"s\"}\n")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try server.allEvents("pipeline=s").count == 2)

            // runs ls / show
            r = try runCLI(["runs", "ls"], environment: env)
            #expect(r.stdout.contains("r42\ttrain\trunning\tfit"))
            r = try runCLI(["runs", "show", "r42", "--json"], environment: env)
            #expect((try? JSONValue.parse(r.stdout))?.objectValue?["timeline"]?.arrayValue?.count == 2)
            r = try runCLI(["events", "ls", "--pipeline", "f"], environment: env)
            #expect(r.stdout.split(separator: "\n").count == 2)

            // Distinct exit codes with one clear line each.
            r = try runCLI(["emit", "--type", "nodots", "--pipeline", "p"], environment: env)
            #expect(r.status == 65)
            #expect(r.stderr.hasPrefix("gatehouse: ") && r.stderr.contains("type must be a dotted name"))
            #expect(r.stderr.split(separator: "\n").count == 1)
            r = try runCLI(["runs", "show", "nope"], environment: env)
            #expect(r.status == 1)
            r = try runCLI(["emit", "--pipeline", "p"], environment: env)
            #expect(r.status == 64)
            r = try runCLI(["emit", "--json", dir.file("missing.json")], environment: env)
            #expect(r.status == 66)
            r = try runCLI(["runs", "ls", "--server", "http://127.0.0.1:9"])
            #expect(r.status == 69)
            #expect(r.stderr.contains("cannot reach the server"))
        }
    }

    @Test func configCheckReportsEveryProblemWithItsLine() async throws {
        try await offThePool {
            let dir = TempDir()
            let good = dir.write("good.yml", """
                server: { address: 127.0.0.1:8080, public_url: http://localhost:8080 }
                storage: { sqlite: ./gatehouse.db, durability: normal }
                receivers:
                  - name: ml-team
                    slack: { webhook_url: "${SLACK_URL}" }
                  - name: ops
                    webhook: { url: https://example.org/hook, secret_file: \(dir.write("secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")) }
                route:
                  receiver: ml-team
                  group_by: [pipeline, run]
                  group_wait: 0s
                  group_interval: 1m
                  repeat_interval: 4h
                  routes:
                    - matchers: ['type=~"run.failed|step.failed"', 'severity="critical"']
                      receiver: ops
                      continue: true
                """)
            var r = try runCLI(["config", "check", good], environment: ["SLACK_URL": "https://hooks.slack.test/x", "GATEHOUSE_TEMPLATES": templatesFolder])
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")

            // Without the variable the same file is refused, naming it.
            r = try runCLI(["config", "check", good])
            #expect(r.status == 78)
            #expect(r.stdout.contains("SLACK_URL is not set"))

            let bad = dir.write("bad.yml", """
                server:
                  adress: 127.0.0.1:8080
                receivers:
                  - name: ops
                    webhook: { url: https://example.org/hook }
                route:
                  receiver: ops
                  group_wait: 5 minutes
                  routes:
                    - matchers: ['type=~"run.(failed"']
                      receiver: ops
                    - matchers: ['severity>"error"']
                      receiver: pager
                """)
            r = try runCLI(["config", "check", bad])
            #expect(r.status == 78)
            let lines = r.stdout.split(separator: "\n").map(String.init)
            #expect(lines.contains { $0.contains(":2: unknown key \"adress\" in server (did you mean address?)") }, "\(lines)")
            #expect(lines.contains { $0.contains(":8: route.group_wait: bad duration \"5 minutes\"") }, "\(lines)")
            #expect(lines.contains { $0.contains(":10: route.routes[0].matchers: bad matcher") }, "\(lines)")
            #expect(lines.contains { $0.contains(":12: route.routes[1].matchers: bad matcher") }, "\(lines)")
            #expect(lines.contains { $0.contains(":13: route.routes[1].receiver names unknown receiver \"pager\"") }, "\(lines)")

            // Numbers past what the arithmetic holds are config errors, not crashes (both
            // overflowed: exit 132).
            let huge = dir.write("huge.yml", """
                server:
                  max_body: 9999999999999GiB
                route:
                  receiver: ops
                  group_interval: 292471208y
                receivers:
                  - name: ops
                    webhook: { url: https://example.org/hook }
                """)
            r = try runCLI(["config", "check", huge])
            #expect(r.status == 78, "\(r.status) \(r.stderr)")
            #expect(r.stdout.contains("server.max_body: bad size") && r.stdout.contains("route.group_interval: bad duration"), "\(r.stdout)")
            // The environment's GATEHOUSE_MAX_BODY is checked as the file's is (a negative one
            // crashed the first chunked request).
            r = try runCLI(["serve", "--address", "127.0.0.1:0", "--db", dir.file("neg.db")], environment: ["GATEHOUSE_MAX_BODY": "-1"])
            #expect(r.status != 0 && r.stderr.contains("GATEHOUSE_MAX_BODY"), "\(r.status) \(r.stderr)")

            // Each platform checks its own block (its settings type), at the line of the key.
            let platforms = dir.write("platforms.yml", """
                receivers:
                  - name: signed
                    webhook:
                      url: https://example.org/signed
                      secret: whsec_abc
                  - name: chat
                    slack:
                      webhok_url: https://hooks.slack.test/x
                  - name: team
                    mattermost:
                      webhook_url: ftp://mm.test/hooks/x
                      icon_url: https://mm.test/icon.png
                  - name: bare
                    discord: {}
                route:
                  receiver: signed
                """)
            r = try runCLI(["config", "check", platforms])
            #expect(r.status == 78)
            let found = r.stdout.split(separator: "\n").map(String.init)
            #expect(found.contains { $0.contains(":5: receiver signed: webhook.secret must be whsec_ followed by base64") }, "\(found)")
            #expect(found.contains { $0.contains(":8: unknown key \"webhok_url\" in receiver slack (did you mean webhook_url?)") }, "\(found)")
            #expect(found.contains { $0.contains(":11: receiver team: mattermost.webhook_url must be an http(s) URL") }, "\(found)")
            #expect(found.contains { $0.contains(":14: receiver bare: discord.webhook_url is required") }, "\(found)")

            // serve refuses a broken config the same way.
            r = try runCLI(["serve", "--config", bad, "--db", dir.file("x.db")])
            #expect(r.status == 78)
            #expect(r.stderr.contains("unknown key \"adress\""))
        }
    }
}
