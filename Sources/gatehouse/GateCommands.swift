import ArgumentParser
import Foundation
import GatehouseClient
import GatehouseCore
import GatehouseServices
import GatehouseServer
import GatehouseStore

/// Exit codes of `gate open --wait` and `gate wait` (docs/gates.md).
enum GateExit {
    static let approved: Int32 = 0
    static let rejected: Int32 = 1
    static let expiredOrPending: Int32 = 2
    static let canceledOrSuperseded: Int32 = 3
    static let error: Int32 = 4

    /// A gate closed by its timeout exits 2 whatever `on_timeout` made of it, except that
    /// `on_timeout: approve` ("go ahead unless someone objects") lets the pipeline go on.
    static func code(for state: String, reason: String?) -> Int32 {
        if reason == "timeout" { return state == "approved" ? approved : expiredOrPending }
        switch state {
        case "approved": return approved
        case "rejected": return rejected
        case "canceled", "superseded": return canceledOrSuperseded
        default: return expiredOrPending
        }
    }
}

struct GateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gate",
        abstract: "Approval gates: open one (and wait), decide, list, cancel.",
        subcommands: [GateOpen.self, GateWait.self, GateApprove.self, GateReject.self, GateList.self, GateShow.self, GateCancel.self, GateLink.self, GateAudit.self])
}

struct GateOpen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "open",
        abstract: "Open a gate; with --wait, block until it closes.",
        discussion: """
            gatehouse gate open --title "Deploy fraud-model v7?" --pipeline train --run r42 --step deploy \\
                --key r42/deploy --approver slack:U024BE7LH --approver web:bob --timeout 2h --wait
            Exit codes with --wait: 0 approved, 1 rejected, 2 expired (or still pending at --wait-timeout),
            3 canceled or superseded, 4 usage or server error. A branching gate prints the chosen option.
            """)

    @OptionGroup var client: ClientOptions
    @Option(help: "What people are asked (required unless --spec).") var title: String?
    @Option(help: "Details shown with the question (Markdown).") var details: String?
    @Option(help: "Pipeline name.") var pipeline: String?
    @Option(name: .customLong("run"), help: "Run id.") var runID: String?
    @Option(help: "Step name.") var step: String?
    @Option(help: "Idempotency key: the same key returns the same gate (a retried step resumes it).") var key: String?
    @Option(name: .customLong("subject-digest"), help: "Digest of what is approved; a new digest supersedes the old gate.") var subjectDigest: String?
    @Option(name: .customLong("choice"), help: "A choice (repeatable; default approve and reject).") var choices: [String] = []
    @Option(name: .customLong("approver"), help: "Who may decide: slack:U…, discord:…, mattermost:@name, web:name or * (repeatable).") var approvers: [String] = []
    @Option(name: .customLong("required-approvals"), help: "Approvals needed (distinct people).") var requiredApprovals: Int?
    @Option(name: .customLong("requested-by"), help: "Identity of the requester (may not approve their own gate).") var requestedBy: String?
    @Flag(name: .customLong("allow-self-approval"), help: "Let the requester decide too.") var allowSelfApproval = false
    @Option(help: "Close the gate after this long (e.g. 2h).") var timeout: String?
    @Option(name: .customLong("on-timeout"), help: "reject (default), approve or expire.") var onTimeout: String?
    @Option(name: .customLong("remind-every"), help: "Re-notify this often while pending.") var remindEvery: String?
    @Option(name: .customLong("escalate-after"), help: "Also notify --escalate-to receivers after this long.") var escalateAfter: String?
    @Option(name: .customLong("escalate-to"), help: "A receiver to escalate to (repeatable).") var escalateTo: [String] = []
    @Option(name: .customLong("input"), help: "An input as NAME:TYPE[:MIN:MAX] (integer, number, string, boolean; repeatable).") var inputs: [String] = []
    @Option(name: .customLong("label"), help: "A label KEY=VALUE (repeatable).") var labels: [String] = []
    @Option(name: .customLong("attr"), help: "An attribute KEY=VALUE, VALUE parsed as JSON when it can be (repeatable).") var attributes: [String] = []
    @Option(name: .customLong("spec"), help: "Send this file's JSON gate (- for stdin); flags are ignored.") var specFile: String?
    @Flag(help: "Block until the gate closes; the exit code says how.") var wait = false
    @Option(name: .customLong("wait-timeout"), help: "Stop waiting after this long (exit 2).") var waitTimeout: String?
    @Flag(help: "Print the whole gate as JSON.") var json = false

    func validate() throws {
        if specFile == nil && title == nil { throw ValidationError("give --title (or --spec FILE)") }
        if let waitTimeout, GatehouseDuration(waitTimeout) == nil { throw ValidationError("--wait-timeout \(waitTimeout) is not a duration such as 10m") }
    }

    func body() throws -> [UInt8] {
        if let specFile { return try readInput(specFile) }
        var o = JSONObject()
        func put(_ key: String, _ value: String?) { if let value { o.append(key, .string(value)) } }
        put("title", title)
        put("details", details)
        put("pipeline", pipeline)
        put("run", runID)
        put("step", step)
        put("key", key)
        if let subjectDigest { o.append("subject", .object(JSONObject([("digest", .string(subjectDigest))]))) }
        if !choices.isEmpty { o.append("choices", .array(choices.map { .string($0) })) }
        if !approvers.isEmpty { o.append("approvers", .array(approvers.map { .string($0) })) }
        if let requiredApprovals { o.append("required_approvals", .int(requiredApprovals)) }
        put("requested_by", requestedBy)
        if allowSelfApproval { o.append("allow_self_approval", .bool(true)) }
        put("timeout", timeout)
        put("on_timeout", onTimeout)
        put("remind_every", remindEvery)
        put("escalate_after", escalateAfter)
        if !escalateTo.isEmpty { o.append("escalate_to", .array(escalateTo.map { .string($0) })) }
        if !inputs.isEmpty {
            o.append("inputs", .array(try inputs.map { text in
                let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 2 else { throw ClientFailure("--input \(text): expected NAME:TYPE[:MIN:MAX]", exitCode: GateExit.error) }
                var i = JSONObject([("name", .string(parts[0])), ("type", .string(parts[1]))])
                if parts.count > 2, let min = Double(parts[2]) { i.append("min", .double(min)) }
                if parts.count > 3, let max = Double(parts[3]) { i.append("max", .double(max)) }
                return .object(i)
            }))
        }
        if !labels.isEmpty { o.append("labels", .object(try keyValues(labels, flag: "--label", json: false))) }
        if !attributes.isEmpty { o.append("attributes", .object(try keyValues(attributes, flag: "--attr", json: true))) }
        return Array(JSONValue.object(o).serialized().utf8)
    }

    func run() throws {
        try runGateClient(wait: wait) {
            let answer = try openGate(body: try body())
            guard let gate = answer.objectValue, let id = gate["id"]?.stringValue else {
                throw ClientFailure("the server answered without a gate", exitCode: GateExit.error)
            }
            guard wait else {
                if json { printJSON(answer) } else { print(id) }
                return
            }
            if gate["state"]?.stringValue == "pending" {
                FileHandle.standardError.write(Data("gatehouse: waiting for gate \(id): \(gate["url"]?.stringValue ?? "")\n".utf8))
            }
            try waitAndExit(id: id, client: client, timeout: waitTimeout.flatMap(GatehouseDuration.init), json: json)
        }
    }
}

extension GateOpen {
    /// Sends the gate. With a `--key` the request is idempotent (the same key returns the same
    /// gate), so if the server goes away — a restart, even one that landed after the gate was
    /// stored but before the answer left — it is sent again until the wait's own deadline (a
    /// minute without `--wait`). Without a key a second send could open a second gate: the
    /// failure is reported instead.
    func openGate(body: [UInt8]) throws -> JSONValue {
        guard key != nil else { return try client.client().call("POST", "/v1/gates", body: body) }
        let patience = wait ? waitTimeout.flatMap(GatehouseDuration.init).map(\.seconds) ?? 86_400 : 60
        let deadline = Date().addingTimeInterval(patience)
        var reported: ClientFailure?
        while true {
            do {
                let answer = try client.client().call("POST", "/v1/gates", body: body)
                if let reported { FileHandle.standardError.write(Data("gatehouse: \(backAfter(reported))\n".utf8)) }
                return answer
            } catch let failure as ClientFailure where (failure.exitCode == ClientFailure.Code.unavailable || failure.status == 503) && Date() < deadline {
                if reported == nil {
                    FileHandle.standardError.write(Data("gatehouse: \(unavailable(failure)); trying again\n".utf8))
                    reported = failure
                }
                Thread.sleep(forTimeInterval: failure.pause(until: deadline))
            }
        }
    }
}

/// What a retried failure is, said to the user: a server that is gone, or one that answered
/// `503` (a full disk, a locked database) with its reason.
func unavailable(_ failure: ClientFailure) -> String {
    failure.status == 503 ? "the server cannot take it now (\(failure.message))" : "lost the server (\(failure.message))"
}

/// What is said once a retried request goes through after `failure`.
func backAfter(_ failure: ClientFailure) -> String {
    failure.status == 503 ? "the server took it" : "reconnected"
}

func keyValues(_ pairs: [String], flag: String, json: Bool) throws -> JSONObject {
    var o = JSONObject()
    for pair in pairs {
        guard let eq = pair.firstIndex(of: "=") else { throw ClientFailure("\(flag) \(pair): expected KEY=VALUE", exitCode: ClientFailure.Code.usage) }
        let value = String(pair[pair.index(after: eq)...])
        o[String(pair[..<eq])] = json ? ((try? JSONValue.parse(value)) ?? .string(value)) : .string(value)
    }
    return o
}

/// Like `runClient`, but every failure of a waiting command exits 4 (docs/gates.md), so a
/// pipeline can tell "the server is broken" from "people said no".
func runGateClient(wait: Bool, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let failure as ClientFailure {
        FileHandle.standardError.write(Data("gatehouse: \(failure.message)\n".utf8))
        throw ExitCode(wait ? GateExit.error : failure.exitCode)
    }
}

/// Waits for a gate to close through `/v1/gates/{id}/wait` (long polls of at most 300 s each,
/// woken server-side the moment the gate closes). If the server goes away — a restart — it
/// reconnects until `timeout`; then exits with the gate's code.
/// What `gate wait` waits on: a gate by id, or by key (even before a rule or a pipeline opens it).
enum WaitTarget {
    case id(String)
    case key(String)

    func path(slice: Int) -> String {
        switch self {
        case .id(let id): "/v1/gates/\(percentEncode(id))/wait?timeout=\(slice)s"
        case .key(let key): "/v1/gates/wait?key=\(percentEncode(key))&timeout=\(slice)s"
        }
    }

    var name: String {
        switch self {
        case .id(let id): "gate \(id)"
        case .key(let key): "the gate with key \(key)"
        }
    }
}

func waitAndExit(id: String, client options: ClientOptions, timeout: GatehouseDuration?, json: Bool) throws -> Never {
    try waitAndExit(.id(id), client: options, timeout: timeout, json: json)
}

func waitAndExit(_ target: WaitTarget, client options: ClientOptions, timeout: GatehouseDuration?, json: Bool) throws -> Never {
    let deadline = timeout.map { Date().addingTimeInterval($0.seconds) }
    var lastGate: JSONValue?
    var reported: ClientFailure?
    var reached = false
    while true {
        let remaining = deadline.map { $0.timeIntervalSinceNow } ?? 300
        if remaining <= 0 { break }
        let slice = Int(min(remaining, 300).rounded(.up))
        let client = options.client(timeout: Double(slice) + 15)
        let asked = Date()
        do {
            let gate = try client.call("GET", target.path(slice: slice))
            lastGate = gate
            reached = true
            if let failure = reported {
                FileHandle.standardError.write(Data("gatehouse: \(backAfter(failure))\n".utf8))
                reported = nil
            }
            if let state = gate.objectValue?["state"]?.stringValue, state != "pending" { finish(gate, json: json) }
        } catch let failure as ClientFailure where failure.exitCode == ClientFailure.Code.unavailable || failure.status == 503 {
            // The server is restarting, or busy: keep trying until our own deadline.
            if reported == nil {
                FileHandle.standardError.write(Data("gatehouse: \(unavailable(failure)); trying again\n".utf8))
                reported = failure
            }
            Thread.sleep(forTimeInterval: failure.pause(until: deadline))
        } catch let failure as ClientFailure where failure.status == 404 {
            // By key: nothing has opened it yet; the server waited its slice, ask again — after
            // a pause, in case the 404 came at once (an older server, a proxy).
            guard case .key = target else { throw failure }
            reached = true
            if Date().timeIntervalSince(asked) < 1 { Thread.sleep(forTimeInterval: 1) }
        }
    }
    if let lastGate {
        if json { printJSON(lastGate) }
        FileHandle.standardError.write(Data("gatehouse: \(target.name) is still pending\n".utf8))
    } else if reached, case .key(let key) = target {
        FileHandle.standardError.write(Data("gatehouse: no gate with key \(key) was opened before the wait timed out\n".utf8))
    } else {
        FileHandle.standardError.write(Data("gatehouse: could not reach the server before the wait timed out\n".utf8))
        Foundation.exit(GateExit.error)
    }
    Foundation.exit(GateExit.expiredOrPending)
}

func finish(_ gate: JSONValue, json: Bool) -> Never {
    let o = gate.objectValue ?? JSONObject()
    let state = o["state"]?.stringValue ?? "pending"
    let outcome = o["outcome"]?.objectValue
    let choices = o["choices"]?.arrayValue?.compactMap(\.stringValue) ?? []
    if json {
        printJSON(gate)
    } else if Set(choices) != ["approve", "reject"], let choice = outcome?["choice"]?.stringValue {
        print(choice)
    }
    var line = "gate \(o["id"]?.stringValue ?? "") \(state)"
    if let by = outcome?["by"]?.stringValue { line += " by \(by)" }
    if outcome?["reason"]?.stringValue == "timeout" { line += " (timed out)" }
    FileHandle.standardError.write(Data("gatehouse: \(line)\n".utf8))
    Foundation.exit(GateExit.code(for: state, reason: outcome?["reason"]?.stringValue))
}

struct GateWait: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait", abstract: "Block until a gate closes; exit 0 approved, 1 rejected, 2 expired or pending at --timeout, 3 canceled/superseded, 4 error.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Gate id (or use --key).") var id: String?
    @Option(help: "Wait for the gate opened with this key — by a gate rule or a pipeline — even before it exists.") var key: String?
    @Option(help: "Stop waiting after this long (exit 2).") var timeout: String?
    @Flag(help: "Print the whole gate as JSON.") var json = false

    func validate() throws {
        if let timeout, GatehouseDuration(timeout) == nil { throw ValidationError("--timeout \(timeout) is not a duration such as 10m") }
        if id != nil && key != nil { throw ValidationError("give a gate id or --key, not both") }
        if id == nil && key == nil { throw ValidationError("give a gate id, or --key") }
    }

    func run() throws {
        try runGateClient(wait: true) {
            let target: WaitTarget = if let key { .key(key) } else { .id(id!) }
            try waitAndExit(target, client: client, timeout: timeout.flatMap(GatehouseDuration.init), json: json)
        }
    }
}

protocol GateDecisionCommand: ParsableCommand {
    var client: ClientOptions { get }
    var id: String { get }
    var comment: String? { get }
    var by: String? { get }
    var inputs: [String] { get }
    var json: Bool { get }
}

extension GateDecisionCommand {
    func decide(_ decision: String) throws {
        try runClient {
            let asked = DecisionRequest(
                decision: decision, by: by, comment: comment,
                inputs: inputs.isEmpty ? nil : try keyValues(inputs, flag: "--input", json: true))
            let gate = try client.client().call("POST", "/v1/gates/\(percentEncode(id))/decisions", body: Array(JSONValueEncoder.value(asked).serialized().utf8))
            if json { printJSON(gate) } else {
                let g = gate.objectValue ?? JSONObject()
                let state = g["state"]?.stringValue ?? "?"
                let approvals = Int(g["approvals"]?.doubleValue ?? 0)
                let needed = Int(g["required_approvals"]?.doubleValue ?? 1)
                print(state == "pending" ? "\(id) pending (\(approvals)/\(needed) approvals)" : "\(id) \(state)")
            }
        }
    }
}

struct GateApprove: GateDecisionCommand {
    static let configuration = CommandConfiguration(commandName: "approve", abstract: "Approve a gate (or pick a branch with --choice).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Gate id.") var id: String
    @Option(help: "Why.") var comment: String?
    @Option(help: "Decide as this identity (an admin token, or a server without tokens).") var by: String?
    @Option(name: .customLong("input"), help: "An input value NAME=VALUE (repeatable).") var inputs: [String] = []
    @Option(help: "For a branching gate: the option chosen.") var choice: String?
    @Flag(help: "Print the gate as JSON.") var json = false
    func run() throws { try decide(choice ?? "approve") }
}

struct GateReject: GateDecisionCommand {
    static let configuration = CommandConfiguration(commandName: "reject", abstract: "Reject a gate.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Gate id.") var id: String
    @Option(help: "Why.") var comment: String?
    @Option(help: "Decide as this identity (an admin token, or a server without tokens).") var by: String?
    var inputs: [String] { [] }
    @Flag(help: "Print the gate as JSON.") var json = false
    func run() throws { try decide("reject") }
}

struct GateList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List gates, newest first.")
    @OptionGroup var client: ClientOptions
    @Option(help: "pending, approved, rejected, expired, canceled or superseded.") var state: String?
    @Option(help: "Only this pipeline.") var pipeline: String?
    @Option(name: .customLong("run"), help: "Only this run.") var runID: String?
    @Option(help: "At most this many.") var limit = 50
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        try runClient {
            var query = ["limit=\(limit)"]
            if let state { query.append("state=\(percentEncode(state))") }
            if let pipeline { query.append("pipeline=\(percentEncode(pipeline))") }
            if let runID { query.append("run=\(percentEncode(runID))") }
            let answer = try client.client().call("GET", "/v1/gates?" + query.joined(separator: "&"))
            if json { printJSON(answer); return }
            let gates = answer.objectValue?["gates"]?.arrayValue ?? []
            print("ID".padding(toLength: 39, withPad: " ", startingAt: 0) + "STATE".padding(toLength: 11, withPad: " ", startingAt: 0) + "APPROVALS  PIPELINE/RUN            EXPIRES                   TITLE")
            for g in gates.compactMap(\.objectValue) {
                let approvals = "\(Int(g["approvals"]?.doubleValue ?? 0))/\(Int(g["required_approvals"]?.doubleValue ?? 1))"
                let scope = (g["pipeline"]?.stringValue ?? "") + (g["run"]?.stringValue.map { "/\($0)" } ?? "")
                print((g["id"]?.stringValue ?? "").padding(toLength: 39, withPad: " ", startingAt: 0)
                    + (g["state"]?.stringValue ?? "").padding(toLength: 11, withPad: " ", startingAt: 0)
                    + approvals.padding(toLength: 11, withPad: " ", startingAt: 0)
                    + scope.padding(toLength: 24, withPad: " ", startingAt: 0)
                    + (g["expires_at"]?.stringValue ?? "-").padding(toLength: 26, withPad: " ", startingAt: 0)
                    + (g["title"]?.stringValue ?? ""))
            }
        }
    }
}

struct GateShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Print one gate as JSON.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Gate id.") var id: String
    func run() throws { try runClient { printJSON(try client.client().call("GET", "/v1/gates/\(percentEncode(id))")) } }
}

struct GateCancel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel a pending gate (its waiters exit 3).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Gate id.") var id: String
    @Option(help: "Why.") var comment: String?
    func run() throws {
        try runClient {
            let asked = CancelRequest(comment: comment)
            let gate = try client.client().call("POST", "/v1/gates/\(percentEncode(id))/cancel", body: Array(JSONValueEncoder.value(asked).serialized().utf8))
            print("\(id) \(gate.objectValue?["state"]?.stringValue ?? "?")")
        }
    }
}

struct GateLink: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "link", abstract: "Make a personal decision link: the web page decides as that person.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Gate id.") var id: String
    @Option(name: .customLong("as"), help: "The web:<name> the link decides as.") var by: String
    @Option(help: "How long the link works (default: until the gate's deadline).") var ttl: String?
    func run() throws {
        try runClient {
            let asked = LinkRequest(by: by, ttl: ttl)
            let answer = try client.client().call("POST", "/v1/gates/\(percentEncode(id))/links", body: Array(JSONValueEncoder.value(asked).serialized().utf8))
            print(answer.objectValue?["url"]?.stringValue ?? "")
        }
    }
}

struct GateAudit: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "Print a gate's audit trail.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Gate id.") var id: String
    @Flag(help: "Print JSON.") var json = false
    func run() throws {
        try runClient {
            let answer = try client.client().call("GET", "/v1/gates/\(percentEncode(id))/audit")
            if json { printJSON(answer); return }
            for e in (answer.objectValue?["entries"]?.arrayValue ?? []).compactMap(\.objectValue) {
                let seq = Int(e["seq"]?.doubleValue ?? 0)
                print("\(seq)\t\(e["at"]?.stringValue ?? "")\t\(e["action"]?.stringValue ?? "")\t\(e["actor"]?.stringValue ?? "-")\t\(e["detail"].map { $0.serialized() } ?? "")")
            }
        }
    }
}

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "The hash-chained audit ledger.", subcommands: [AuditVerify.self])
}

struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the whole ledger; names the first broken entry (exit 1) or prints ok.",
        discussion: "With --db it reads the database file directly (the server may be stopped); otherwise it asks the server.")
    @OptionGroup var client: ClientOptions
    @Option(help: "SQLite database file or postgres:// URL to check directly.") var db: String?

    func run() async throws {
        try await runClient {
            let entries: Int
            let broken: (seq: Int64, reason: String)?
            if let db {
                // Offline, through the same service the server answers with.
                let database: any StoreDatabase
                if Storage.isPostgres(db) {
                    database = try openStore(db, migrate: false)
                } else {
                    guard FileManager.default.fileExists(atPath: db) else { throw ClientFailure("no database at \(db)", exitCode: ClientFailure.Code.noInput) }
                    do { database = try GatehouseDatabase(path: db) } catch { throw ClientFailure("cannot open \(db): \(error)", exitCode: ClientFailure.Code.noInput) }
                }
                let bus = Bus()
                let gates = GateService(repository: SQLGateRepository(log: EventLog(database: database, bus: bus)), bus: bus)
                let verification = try await gates.verifyAudit()
                (entries, broken) = (verification.entries, verification.firstBroken)
            } else {
                let o = try client.client().call("GET", "/v1/audit/verify").objectValue ?? JSONObject()
                entries = Int(o["entries"]?.doubleValue ?? 0)
                broken = o["first_broken"]?.objectValue.map { (Int64($0["seq"]?.doubleValue ?? 0), $0["reason"]?.stringValue ?? "") }
            }
            if let broken {
                print("broken at entry \(broken.seq): \(broken.reason)")
                throw ClientFailure("the audit ledger does not verify (\(entries) entries checked)", exitCode: 1)
            }
            print("ok: \(entries) entries, chain intact")
        }
    }
}
