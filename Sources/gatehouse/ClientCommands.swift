import ArgumentParser
import Foundation
import GatehouseClient
import GatehouseCore

struct Emit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send an event.",
        discussion: """
            gatehouse emit --type step.failed --pipeline train --run r42 --step fit --summary "OOM"
            gatehouse emit --json events.ndjson      (a JSON event, a JSON array or NDJSON; - reads stdin)
            """)

    @OptionGroup var client: ClientOptions
    @Option(help: "Event type, e.g. run.failed.") var type: String?
    @Option(help: "Pipeline name.") var pipeline: String?
    @Option(name: .customLong("run"), help: "Run id.") var runID: String?
    @Option(help: "Step name.") var step: String?
    @Option(help: "info, warning, error or critical.") var severity: String?
    @Option(help: "One-line summary.") var summary: String?
    @Option(help: "Details (Markdown).") var details: String?
    @Option(name: .customLong("label"), help: "A label KEY=VALUE (repeatable).") var labels: [String] = []
    @Option(name: .customLong("attr"), help: "An attribute KEY=VALUE; VALUE is parsed as JSON when it can be (repeatable).") var attributes: [String] = []
    @Option(help: "Link to the orchestrator's page.") var url: String?
    @Option(help: "RFC 3339 time (default: now).") var time: String?
    @Option(help: "Idempotency id.") var id: String?
    @Option(name: .customLong("json"), help: "Send this file's JSON (event, array or NDJSON) instead of flags; - for stdin.") var jsonFile: String?

    func validate() throws {
        if jsonFile == nil && (type == nil || pipeline == nil) {
            throw ValidationError("give --type and --pipeline, or --json FILE")
        }
        if jsonFile != nil && (type != nil || pipeline != nil) {
            throw ValidationError("--json cannot be combined with event flags")
        }
    }

    func run() throws {
        try runClient {
            let body: [UInt8]
            var contentType = "application/json"
            if let jsonFile {
                body = try readInput(jsonFile)
                // One JSON document (object or array) or NDJSON: decide by trying the former.
                if (try? JSONValue.parse(bytes: body)) == nil,
                   String(decoding: body, as: UTF8.self).split(separator: "\n").count > 1 {
                    contentType = "application/x-ndjson"
                }
            } else {
                body = Array(try eventFromFlags().serialized().utf8)
            }
            let answer = try client.client().call("POST", "/v1/events", body: body, contentType: contentType)
            let ids = answer.objectValue?["ids"]?.arrayValue?.compactMap(\.stringValue) ?? []
            let duplicates = Int(answer.objectValue?["duplicates"]?.doubleValue ?? 0)
            for id in ids { print(id) }
            if duplicates > 0 { FileHandle.standardError.write(Data("gatehouse: \(duplicates) duplicate(s) already recorded\n".utf8)) }
        }
    }

    func eventFromFlags() throws -> JSONValue {
        var o = JSONObject()
        func put(_ key: String, _ value: String?) { if let value { o.append(key, .string(value)) } }
        put("id", id)
        put("type", type)
        put("pipeline", pipeline)
        put("run", runID)
        put("step", step)
        put("severity", severity)
        put("summary", summary)
        put("details", details)
        put("url", url)
        put("time", time)
        if !labels.isEmpty {
            var l = JSONObject()
            for pair in labels {
                guard let eq = pair.firstIndex(of: "=") else { throw ClientFailure("--label \(pair): expected KEY=VALUE", exitCode: ClientFailure.Code.usage) }
                l[String(pair[..<eq])] = .string(String(pair[pair.index(after: eq)...]))
            }
            o.append("labels", .object(l))
        }
        if !attributes.isEmpty {
            var a = JSONObject()
            for pair in attributes {
                guard let eq = pair.firstIndex(of: "=") else { throw ClientFailure("--attr \(pair): expected KEY=VALUE", exitCode: ClientFailure.Code.usage) }
                let raw = String(pair[pair.index(after: eq)...])
                a[String(pair[..<eq])] = (try? JSONValue.parse(raw)) ?? .string(raw)
            }
            o.append("attributes", .object(a))
        }
        return .object(o)
    }
}

func queryString(_ pairs: [(String, String?)]) -> String {
    let parts = pairs.compactMap { key, value -> String? in
        guard let value else { return nil }
        let encoded = value.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+?#"))) ?? value
        return "\(key)=\(encoded)"
    }
    return parts.isEmpty ? "" : "?" + parts.joined(separator: "&")
}

struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events", abstract: "Read events.", subcommands: [Tail.self, List.self])

    struct Filters: ParsableArguments {
        @Option(help: "Only this pipeline.") var pipeline: String?
        @Option(help: "Only this run.") var run: String?
        @Option(help: "Only these types (comma-separated).") var type: String?
    }

    struct Tail: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Follow events as they are committed (reconnects on its own).")
        @OptionGroup var client: ClientOptions
        @OptionGroup var filters: Filters
        @Option(help: "Start after this cursor (default: only new events).") var after: String?
        @Flag(help: "Print each event as one JSON line.") var json = false
        @Option(help: "Stop after this many events.") var count: Int?

        func run() throws {
            try runClient {
                var seen = 0
                let query = queryString([("pipeline", filters.pipeline), ("run", filters.run), ("type", filters.type)])
                try client.client().followEvents(query: query, from: after) { _, event in
                    // Unbuffered, so a pipe sees each event as it arrives.
                    FileHandle.standardOutput.write(Data(((json ? event.serialized() : formatEvent(event)) + "\n").utf8))
                    seen += 1
                    return count.map { seen < $0 } ?? true
                }
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List stored events, oldest first.")
        @OptionGroup var client: ClientOptions
        @OptionGroup var filters: Filters
        @Option(help: "Start after this cursor.") var after: String?
        @Option(help: "At most this many (1-1000).") var limit: Int = 100
        @Flag(help: "Print the raw JSON answer.") var json = false

        func run() throws {
            try runClient {
                let query = queryString([("pipeline", filters.pipeline), ("run", filters.run), ("type", filters.type), ("after", after), ("limit", String(limit))])
                let answer = try client.client().call("GET", "/v1/events" + query)
                if json { printJSON(answer); return }
                for event in answer.objectValue?["events"]?.arrayValue ?? [] { print(formatEvent(event)) }
            }
        }
    }
}

func formatEvent(_ event: JSONValue) -> String {
    let o = event.objectValue ?? JSONObject()
    func s(_ k: String) -> String { o[k]?.stringValue ?? "" }
    var line = "\(s("time"))  \(s("severity").padding(toLength: 8, withPad: " ", startingAt: 0)) \(s("type"))  \(s("pipeline"))"
    if !s("run").isEmpty { line += "/\(s("run"))" }
    if !s("step").isEmpty { line += "/\(s("step"))" }
    if !s("summary").isEmpty { line += "  \(s("summary"))" }
    return line
}

struct RunsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "runs", abstract: "Run status derived from events.", subcommands: [List.self, Show.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "Recent runs, most recently active first.")
        @OptionGroup var client: ClientOptions
        @Option(help: "Only this pipeline.") var pipeline: String?
        @Option(help: "running, succeeded or failed.") var status: String?
        @Option(help: "At most this many.") var limit: Int = 50
        @Flag(help: "Print the raw JSON answer.") var json = false

        func run() throws {
            try runClient {
                let answer = try client.client().call("GET", "/v1/runs" + queryString([("pipeline", pipeline), ("status", status), ("limit", String(limit))]))
                if json { printJSON(answer); return }
                let runs = answer.objectValue?["runs"]?.arrayValue ?? []
                print(["RUN", "PIPELINE", "STATUS", "FAILED STEP", "STARTED", "DURATION", "EVENTS"].joined(separator: "\t"))
                for run in runs { print(runRow(run)) }
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One run with its timeline.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Run id.") var runID: String
        @Option(help: "Pipeline, when several use the same run id.") var pipeline: String?
        @Flag(help: "Print the raw JSON answer.") var json = false

        func run() throws {
            try runClient {
                let path = "/v1/runs/" + percentEncode(runID)
                let answer = try client.client().call("GET", path + queryString([("pipeline", pipeline)]))
                if json { printJSON(answer); return }
                print(["RUN", "PIPELINE", "STATUS", "FAILED STEP", "STARTED", "DURATION", "EVENTS"].joined(separator: "\t"))
                print(runRow(answer))
                print("")
                for event in answer.objectValue?["timeline"]?.arrayValue ?? [] { print(formatEvent(event)) }
            }
        }
    }
}

func runRow(_ run: JSONValue) -> String {
    let o = run.objectValue ?? JSONObject()
    func s(_ k: String) -> String { o[k]?.stringValue ?? "-" }
    let duration = o["duration_seconds"]?.doubleValue.map { String(format: "%.1fs", $0) } ?? "-"
    let events = o["events"]?.doubleValue.map { String(Int($0)) } ?? "0"
    return [s("run"), s("pipeline"), s("status"), s("failed_step"), s("started_at"), duration, events].joined(separator: "\t")
}
