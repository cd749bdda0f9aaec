import ArgumentParser
import Foundation
import GatehouseClient
import GatehouseCore
import GatehouseServer

struct DeliveriesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "deliveries", abstract: "Inspect and retry deliveries.", subcommands: [List.self, Retry.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "Recent deliveries, newest first.")
        @OptionGroup var client: ClientOptions
        @Option(help: "pending, failed, delivered, dead or muted.") var state: String?
        @Option(help: "Only this receiver.") var receiver: String?
        @Option(help: "At most this many.") var limit: Int = 50
        @Flag(help: "Print the raw JSON answer.") var json = false

        func run() throws {
            try runClient {
                let answer = try client.client().call("GET", "/v1/deliveries" + queryString([("state", state), ("receiver", receiver), ("limit", String(limit))]))
                if json { printJSON(answer); return }
                print(["ID", "RECEIVER", "STATE", "ATTEMPTS", "STATUS", "CREATED", "ERROR"].joined(separator: "\t"))
                for d in answer.objectValue?["deliveries"]?.arrayValue ?? [] {
                    let o = d.objectValue ?? JSONObject()
                    func s(_ k: String) -> String { o[k]?.stringValue ?? "-" }
                    let status = o["last_status"]?.doubleValue.map { String(Int($0)) } ?? "-"
                    let attempts = o["attempts"]?.doubleValue.map { String(Int($0)) } ?? "0"
                    print([s("id"), s("receiver"), s("state"), attempts, status, s("created_at"), s("last_error")].joined(separator: "\t"))
                }
            }
        }
    }

    struct Retry: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send a failed, dead or muted delivery again now.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Delivery id.") var id: String

        func run() throws {
            try runClient {
                let answer = try client.client().call("POST", "/v1/deliveries/\(percentEncode(id))/retry")
                print("\(answer.objectValue?["id"]?.stringValue ?? id) queued")
            }
        }
    }
}

struct SilenceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "silence", abstract: "Mute matching events for a while.", subcommands: [Add.self, List.self, Expire.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a silence.",
            discussion: #"gatehouse silence add 'pipeline="train"' 'type=~"step.*"' --duration 2h --comment "GPU maintenance""#)
        @OptionGroup var client: ClientOptions
        @Argument(help: "Matchers, Alertmanager syntax.") var matchers: [String]
        @Option(help: "How long, e.g. 2h (default 1h).") var duration: String = "1h"
        @Option(help: "Start time, RFC 3339 (default now).") var start: String?
        @Option(help: "Who adds it.") var createdBy: String?
        @Option(help: "Why.") var comment: String = ""

        func run() throws {
            try runClient {
                let asked = SilenceRequest(
                    matchers: matchers, starts_at: start, duration: duration,
                    created_by: createdBy ?? "cli:\(ProcessInfo.processInfo.environment["USER"] ?? "unknown")", comment: comment)
                let answer = try client.client().call("POST", "/v1/silences", body: Array(JSONValueEncoder.value(asked).serialized().utf8))
                print(answer.objectValue?["id"]?.stringValue ?? "")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List silences.")
        @OptionGroup var client: ClientOptions
        @Flag(help: "Print the raw JSON answer.") var json = false

        func run() throws {
            try runClient {
                let answer = try client.client().call("GET", "/v1/silences")
                if json { printJSON(answer); return }
                print(["ID", "STATE", "MATCHERS", "ENDS", "BY", "COMMENT"].joined(separator: "\t"))
                for s in answer.objectValue?["silences"]?.arrayValue ?? [] {
                    let o = s.objectValue ?? JSONObject()
                    let matchers = (o["matchers"]?.arrayValue ?? []).compactMap(\.stringValue).joined(separator: ",")
                    print([o["id"]?.stringValue ?? "", o["state"]?.stringValue ?? "", matchers, o["ends_at"]?.stringValue ?? "", o["created_by"]?.stringValue ?? "", o["comment"]?.stringValue ?? ""].joined(separator: "\t"))
                }
            }
        }
    }

    struct Expire: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a silence now.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Silence id.") var id: String

        func run() throws {
            try runClient {
                _ = try client.client().call("DELETE", "/v1/silences/\(percentEncode(id))")
                print("expired \(id)")
            }
        }
    }
}

struct RoutesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "routes", abstract: "Explain routing.", subcommands: [Test.self])

    struct Test: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the gates an event would open and the receivers it would reach, and why, without sending anything.",
            discussion: #"gatehouse routes test '{"type":"run.failed","pipeline":"train"}'"#)
        @Option(help: "Config file (default ./gatehouse.yml).") var config: String?
        @Argument(help: "The event, as JSON.") var event: String
        @OptionGroup var client: ClientOptions
        @Flag(help: "Do not ask the server which silences are active.") var offline = false

        func run() throws {
            let cfg = try loadConfig(path: config)
            let parsed: JSONValue
            do { parsed = try JSONValue.parse(event) } catch {
                FileHandle.standardError.write(Data("gatehouse: the event is not valid JSON: \(error)\n".utf8))
                throw ExitCode(ClientFailure.Code.usage)
            }
            let e: Event
            switch EventValidator().validate(parsed) {
            case .success(let v): e = v
            case .failure(let invalid):
                FileHandle.standardError.write(Data("gatehouse: \(Problem.invalid(invalid.errors).detail)\n".utf8))
                throw ExitCode(ClientFailure.Code.rejected)
            }
            guard explainRules(cfg, for: e) else {
                // The server would refuse the event: it reaches nobody.
                throw ExitCode(ClientFailure.Code.rejected)
            }
            guard let tree = RouteTree(cfg.route) else {
                print("no route is configured: the event reaches no receiver")
                return
            }
            let nodes = tree.match(e)
            for node in nodes {
                print("→ \(node.receiver)")
                print("    route     \(node.path)\(node.line > 0 ? " (line \(node.line))" : "")" + (node.matchers.isEmpty ? "  matches every event" : "  matchers: " + node.matchers.map(\.description).joined(separator: ", ")))
                let groupBy: String = switch node.groupBy {
                case .everything: "... (every event alone)"
                case .fields(let f): f.isEmpty ? "(nothing: one group)" : f.joined(separator: ", ")
                }
                print("    group     by \(groupBy) → key \"\(node.groupKey(for: e))\"")
                print("    timing    group_wait \(node.groupWait), group_interval \(node.groupInterval), repeat_interval \(node.repeatInterval)")
                if let fallback = node.fallback { print("    fallback  \(fallback) if the delivery dies") }
                if node.continueMatching { print("    continue  true: later sibling routes are tried too") }
            }
            for (i, rule) in cfg.inhibitRules.enumerated() where rule.targetMatchers.allSatisfy({ $0.matches(e) }) {
                print("  may be muted by inhibit_rules[\(i)] while an event matching \(rule.sourceMatchers.map(\.description).joined(separator: ", ")) with the same \(rule.equal.joined(separator: ", ")) is known")
            }
            guard !offline else { return }
            // Silences live on the server: ask it, and say plainly when it cannot be asked.
            do {
                let answer = try client.client(timeout: 5).call("GET", "/v1/silences")
                let now = Timestamp.now()
                var muted = false
                for s in answer.objectValue?["silences"]?.arrayValue ?? [] {
                    let o = s.objectValue ?? JSONObject()
                    guard o["state"]?.stringValue == "active" else { continue }
                    let matchers = (o["matchers"]?.arrayValue ?? []).compactMap { $0.stringValue.flatMap { try? Matcher.parse($0) } }
                    guard let ends = o["ends_at"]?.stringValue.flatMap({ Timestamp(rfc3339: $0) }), ends > now,
                          !matchers.isEmpty, matchers.allSatisfy({ $0.matches(e) }) else { continue }
                    muted = true
                    print("  muted by silence \(o["id"]?.stringValue ?? "?") until \(ends.rfc3339) (\(matchers.map(\.description).joined(separator: ", ")))")
                }
                if !muted { print("  no active silence mutes it") }
            } catch let failure as ClientFailure {
                print("  (could not ask the server about silences: \(failure.message))")
            }
        }
    }
}

/// The gates `event` would open and the items it would add (gate and labelling rules),
/// rendered as they would be — or why the event would be refused (then false).
func explainRules(_ config: GatehouseConfig, for event: Event) -> Bool {
    var accepted = true
    for rule in config.labellingRules where rule.matches(event) {
        switch rule.work(for: event) {
        case .success(let (spec, items)):
            print("adds \(items.count) item\(items.count == 1 ? "" : "s") to dataset \(spec.name) by rule \(rule.name)\(rule.line > 0 ? " (line \(rule.line))" : "") (created on first use: \(spec.task.rawValue), labels \(spec.labels.joined(separator: ", ")))")
        case .failure(let invalid):
            print("REFUSED by labelling rule \(rule.name)\(rule.line > 0 ? " (line \(rule.line))" : ""): the server would answer 422")
            for error in invalid.errors { print("    \(error.field) \(error.detail)") }
            accepted = false
        }
    }
    for rule in config.gateRules where rule.matches(event) {
        let matchers = rule.matchers.map(\.description).joined(separator: ", ")
        switch rule.gate(for: event) {
        case .success(let spec):
            print("opens gate by rule \(rule.name)\(rule.line > 0 ? " (line \(rule.line))" : "")  matchers: \(matchers)")
            print("    title     \(spec.title)")
            if let key = spec.key { print("    key       \(key)  (the same key again is this gate; a new subject.digest supersedes it)") }
            print("    approvers \(spec.approvers.isEmpty ? "anyone with gates:decide" : spec.approvers.joined(separator: ", "))" +
                  (spec.requiredApprovals > 1 ? ", \(spec.requiredApprovals) approvals needed" : ""))
            if let timeout = spec.timeout { print("    timeout   \(timeout), then \(spec.onTimeout.rawValue)") }
            if let when = spec.autoApprove { print("    auto      approved at once when \(when)") }
        case .failure(let invalid):
            print("REFUSED by rule \(rule.name)\(rule.line > 0 ? " (line \(rule.line))" : ""): the server would answer 422")
            for error in invalid.errors { print("    \(error.field) \(error.detail)") }
            accepted = false
        }
    }
    return accepted
}
