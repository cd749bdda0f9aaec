import Foundation
import GatehouseClient
import GatehouseCore
import Testing

@Suite(.serialized)
struct SilenceRouteTests {
    @Test func silencesMuteMatchingEventsUntilTheyExpire() async throws {
        try await offThePool {
            let sink = try Sink()
            let dir = TempDir()
            let cfg = dir.write("gatehouse.yml", """
                receivers:
                  - name: team
                    webhook: { url: \(sink.url("/ok/team")) }
                route: { receiver: team, group_by: ['...'] }
                """)
            let server = try ServerProcess(dir: dir, arguments: ["--config", cfg], environment: ["GATEHOUSE_TEMPLATES": templatesFolder])
            let env = ["GATEHOUSE_URL": server.url]

            // Bad silences are refused, naming the field.
            var r = try server.post("/v1/silences", #"{"matchers":["pipeline>\"x\""],"duration":"1h"}"#)
            #expect(r.status == 422)
            #expect(r.json["errors"]?.arrayValue?.first?.objectValue?["field"] == .string("matchers[0]"))
            r = try server.post("/v1/silences", #"{"matchers":["pipeline=\"x\""]}"#)
            #expect(r.status == 422)
            #expect(r.json["errors"]?.arrayValue?.first?.objectValue?["field"] == .string("ends_at"))
            #expect(try server.post("/v1/silences", #"{"matchers":["a=\"b\""],"starts_at":"2026-01-02T00:00:00Z","ends_at":"2026-01-01T00:00:00Z"}"#).status == 422)

            let added = try runCLI(["silence", "add", #"pipeline="train""#, #"type=~"step.*""#, "--duration", "1h", "--comment", "GPU maintenance", "--created-by", "web:bob"], environment: env)
            #expect(added.status == 0, "\(added.stderr)")
            let id = added.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(id.hasPrefix("sil_"))
            let listed = try runCLI(["silence", "ls"], environment: env)
            #expect(listed.stdout.contains(id) && listed.stdout.contains("active") && listed.stdout.contains("GPU maintenance"))

            _ = try server.post("/v1/events", #"[{"id":"m1","type":"step.failed","pipeline":"train"},{"id":"m2","type":"run.failed","pipeline":"train"},{"id":"m3","type":"step.failed","pipeline":"etl"}]"#)
            var rows = try server.waitForDeliveries { rows in rows.count == 3 && rows.allSatisfy { $0["state"] != .string("pending") } }
            let states = Dictionary(uniqueKeysWithValues: rows.map { ($0["event_cursor"]!.stringValue!, $0["state"]!.stringValue!) })
            #expect(states == ["1": "muted", "2": "delivered", "3": "delivered"])
            #expect(rows.first { $0["event_cursor"] == .string("1") }?["last_error"]?.stringValue?.contains(id) == true)

            // Expired, the silence mutes nothing more; the muted delivery can be sent by hand.
            #expect(try runCLI(["silence", "expire", id], environment: env).status == 0)
            #expect(try runCLI(["silence", "expire", "sil_nope"], environment: env).status == 1)
            _ = try server.post("/v1/events", #"{"id":"m4","type":"step.failed","pipeline":"train"}"#)
            let muted = try #require(rows.first { $0["state"] == .string("muted") }?["id"]?.stringValue)
            #expect(try runCLI(["deliveries", "retry", muted], environment: env).status == 0)
            rows = try server.waitForDeliveries { rows in rows.count == 4 && rows.allSatisfy { $0["state"] == .string("delivered") } }
            #expect(rows.allSatisfy { $0["state"] == .string("delivered") })
            #expect(try sink.wait(for: 4, at: "/ok/team").count == 4)
            let ls = try runCLI(["deliveries", "ls", "--receiver", "team"], environment: env)
            #expect(ls.stdout.split(separator: "\n").count == 5)
            #expect(try runCLI(["deliveries", "retry", "msg_nope"], environment: env).status == 1)
        }
    }

    /// A silence mutes an event posted the moment its `201` arrives: the dispatcher re-reads
    /// silences before its next attempt once the bus says one changed (it used to wait for the
    /// message to come off its queue, which a burst of commits could delay or overflow).
    @Test func aSilenceMutesAnEventPostedRightAfterIt() async throws {
        try await offThePool {
            let (_, server) = try deliveringServer { sink in """
                receivers:
                  - name: team
                    webhook: { url: \(sink.url("/ok/team")) }
                route: { receiver: team, group_by: ['...'], group_wait: 0s }
                """ }
            let count = 25
            for n in 0..<count {
                #expect(try server.post("/v1/silences", #"{"matchers":["pipeline=\"p\#(n)\""],"duration":"1h"}"#).status == 201)
                #expect(try server.post("/v1/events", #"{"id":"e\#(n)","type":"run.failed","pipeline":"p\#(n)","run":"r"}"#).status == 202)
            }
            let rows = try server.waitForDeliveries { rows in rows.count == count && rows.allSatisfy { $0["state"] != .string("pending") } }
            let leaked = rows.filter { $0["state"] != .string("muted") }
            #expect(rows.count == count && leaked.isEmpty, "\(leaked.count) of \(count) sent despite their silence")
        }
    }

    /// Silenced messages to a paced receiver (Slack: about one a second) take no turn: a live
    /// alert behind eight silenced ones goes at once, not seconds later.
    @Test func silencedMessagesTakeNoTurnOfAPacedReceiver() async throws {
        try await offThePool {
            let (sink, server) = try deliveringServer { sink in """
                receivers:
                  - name: team
                    slack: { webhook_url: \(sink.url("/ok/slack")) }
                route: { receiver: team, group_by: ['...'], group_wait: 0s }
                """ }
            #expect(try server.post("/v1/silences", #"{"matchers":["pipeline=\"quiet\""],"duration":"1h"}"#).status == 201)
            let quiet = (0..<8).map { #"{"id":"q\#($0)","type":"run.failed","pipeline":"quiet","run":"r\#($0)"}"# }.joined(separator: ",")
            #expect(try server.post("/v1/events", "[\(quiet)]").status == 202)
            let posted = Date().timeIntervalSince1970
            #expect(try server.post("/v1/events", #"{"id":"loud","type":"run.failed","pipeline":"loud","run":"r"}"#).status == 202)
            let sent = try sink.wait(for: 1, at: "/ok/slack", timeout: 15)
            #expect(sent.count == 1)
            // Eight tokens (three of burst, then one a second) would have made it wait ~5 s.
            #expect((sent.first?.time ?? .infinity) - posted < 3.5, "the live alert waited \((sent.first?.time ?? 0) - posted) s")
            let rows = try server.waitForDeliveries { rows in rows.count == 9 && rows.allSatisfy { $0["state"] != .string("pending") } }
            #expect(rows.filter { $0["state"] == .string("muted") }.count == 8)
        }
    }

    /// The same for inhibition, which an attempt learns only once it has read the sources: the
    /// token its message took is given back when nothing is sent.
    @Test func inhibitedMessagesGiveBackTheirTurnOfAPacedReceiver() async throws {
        try await offThePool {
            let (sink, server) = try deliveringServer { sink in """
                receivers:
                  - name: team
                    slack: { webhook_url: \(sink.url("/ok/slack")) }
                route: { receiver: team, group_by: ['...'], group_wait: 0s }
                inhibit_rules:
                  - source_matchers: ['type="run.failed"']
                    target_matchers: ['type="step.failed"']
                    equal: [pipeline, run]
                """ }
            #expect(try server.post("/v1/events", #"{"id":"src","type":"run.failed","pipeline":"quiet","run":"r"}"#).status == 202)
            _ = try sink.wait(for: 1, at: "/ok/slack")
            let steps = (0..<8).map { #"{"id":"s\#($0)","type":"step.failed","pipeline":"quiet","run":"r","step":"s\#($0)"}"# }.joined(separator: ",")
            #expect(try server.post("/v1/events", "[\(steps)]").status == 202)
            let posted = Date().timeIntervalSince1970
            #expect(try server.post("/v1/events", #"{"id":"loud","type":"run.failed","pipeline":"loud","run":"r"}"#).status == 202)
            let sent = try sink.wait(for: 2, at: "/ok/slack", timeout: 15)
            #expect(sent.count == 2)
            // Two tokens left of the burst, then one a second: ~6 s had it waited its turn.
            #expect((sent.last?.time ?? .infinity) - posted < 3.5, "the live alert waited \((sent.last?.time ?? 0) - posted) s")
            let rows = try server.waitForDeliveries { rows in rows.count == 10 && rows.allSatisfy { $0["state"] != .string("pending") } }
            #expect(rows.filter { $0["state"] == .string("muted") }.count == 8)
        }
    }

    /// A group's flush that a silence muted whole is still its flush: the group's clock runs
    /// from it, so an event arriving once group_interval has passed goes at once (the muted
    /// flush used to stay "pending" in the group, which then ticked from its old time).
    @Test func aWhollySilencedFlushStillStartsItsGroupsInterval() async throws {
        try await offThePool {
            let (sink, server) = try deliveringServer { sink in """
                receivers:
                  - name: team
                    webhook: { url: \(sink.url("/ok/team")) }
                route: { receiver: team, group_by: [pipeline], group_wait: 0s, group_interval: 5s }
                """ }
            #expect(try server.post("/v1/silences", #"{"matchers":["type=\"step.failed\""],"duration":"1h"}"#).status == 201)
            #expect(try server.post("/v1/events", #"{"id":"quiet","type":"step.failed","pipeline":"p","run":"r","step":"s"}"#).status == 202)
            _ = try server.waitForDeliveries { rows in rows.first?["state"] == .string("muted") }
            // Past group_interval after the muted flush, well short of the tick after it.
            Thread.sleep(forTimeInterval: 5.6)
            let posted = Date().timeIntervalSince1970
            #expect(try server.post("/v1/events", #"{"id":"loud","type":"run.failed","pipeline":"p","run":"r"}"#).status == 202)
            let sent = try sink.wait(for: 1, at: "/ok/team", timeout: 10)
            #expect(sent.count == 1)
            // Without the flush recorded it waited for the next tick, ~4.4 s.
            #expect((sent.first?.time ?? .infinity) - posted < 3.5, "sent \((sent.first?.time ?? 0) - posted) s after it was posted")
        }
    }

    @Test func routesTestExplainsWithoutSending() async throws {
        try await offThePool {
            let dir = TempDir()
            let cfg = dir.write("gatehouse.yml", """
                receivers:
                  - name: ml-team
                    slack: { webhook_url: https://hooks.slack.test/x }
                  - name: ops
                    webhook: { url: https://ops.test/hook }
                route:
                  receiver: ml-team
                  group_by: [pipeline, run]
                  routes:
                    - matchers: ['type=~"run.failed|step.failed"', 'severity="critical"']
                      receiver: ops
                      continue: true
                      fallback: ml-team
                inhibit_rules:
                  - source_matchers: ['type="run.failed"']
                    target_matchers: ['type="step.failed"']
                    equal: [run]
                """)
            var r = try runCLI(["routes", "test", "--offline", "--config", cfg, #"{"type":"step.failed","pipeline":"train","run":"r1","severity":"critical"}"#])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("→ ops"))
            // A child took it, so the root does not (continue only lets later siblings match too).
            #expect(!r.stdout.contains("→ ml-team"))
            #expect(r.stdout.contains(#"key "root.0|pipeline=train,run=r1""#))
            #expect(r.stdout.contains("fallback  ml-team"))
            #expect(r.stdout.contains("may be muted by inhibit_rules[0]"))
            r = try runCLI(["routes", "test", "--offline", "--config", cfg, #"{"type":"run.started","pipeline":"train"}"#])
            #expect(r.stdout.contains("→ ml-team") && !r.stdout.contains("→ ops"))
            r = try runCLI(["routes", "test", "--offline", "--config", cfg, #"{"type":"run.started"}"#])
            #expect(r.status == 65)
            #expect(r.stderr.contains("pipeline is required"))

            // With a server, it names the silences that would mute the event.
            let server = try ServerProcess(dir: dir, arguments: ["--config", cfg], environment: ["GATEHOUSE_TEMPLATES": templatesFolder])
            let silence = try server.post("/v1/silences", #"{"matchers":["pipeline=\"train\""],"duration":"1h","comment":"maintenance"}"#)
            let id = try #require(silence.json["id"]?.stringValue)
            r = try runCLI(["routes", "test", "--config", cfg, #"{"type":"run.started","pipeline":"train"}"#], environment: ["GATEHOUSE_URL": server.url])
            #expect(r.stdout.contains("muted by silence \(id)"), "\(r.stdout)")
            r = try runCLI(["routes", "test", "--config", cfg, #"{"type":"run.started","pipeline":"etl"}"#], environment: ["GATEHOUSE_URL": server.url])
            #expect(r.stdout.contains("no active silence mutes it"))
            r = try runCLI(["routes", "test", "--config", cfg, #"{"type":"run.started","pipeline":"etl"}"#], environment: ["GATEHOUSE_URL": "http://127.0.0.1:9"])
            #expect(r.status == 0)
            #expect(r.stdout.contains("could not ask the server about silences"))
        }
    }

    @Test func configCheckReportsABrokenTemplateOverride() async throws {
        try await offThePool {
            let dir = TempDir()
            try FileManager.default.createDirectory(atPath: dir.file("tpl/slack"), withIntermediateDirectories: true)
            _ = dir.write("tpl/slack/event.mustache", "{{% CONTENT_TYPE: JSON}}\n{\"text\": \"{{title}}\" \"blocks\": []}")
            let cfg = dir.write("gatehouse.yml", """
                templates: \(dir.file("tpl"))
                receivers:
                  - name: team
                    slack: { webhook_url: https://hooks.slack.test/x }
                route: { receiver: team }
                """)
            let r = try runCLI(["config", "check", cfg], environment: ["GATEHOUSE_TEMPLATES": templatesFolder])
            #expect(r.status == 78)
            #expect(r.stdout.contains("template slack/event did not render valid JSON"), "\(r.stdout)")
            // A sound override passes.
            _ = dir.write("tpl/slack/event.mustache", "{{% CONTENT_TYPE: JSON}}\n{\"text\": \"custom {{title}}\"}")
            #expect(try runCLI(["config", "check", cfg], environment: ["GATEHOUSE_TEMPLATES": templatesFolder]).status == 0)
        }
    }
}
