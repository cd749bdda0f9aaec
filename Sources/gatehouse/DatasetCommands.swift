import ArgumentParser
import Foundation
import GatehouseClient
import GatehouseCore

struct DatasetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset",
        abstract: "Labelling between steps: create a dataset, add items, wait for labels, export them.",
        subcommands: [DatasetCreate.self, DatasetAdd.self, DatasetList.self, DatasetStatsCommand.self, DatasetWait.self, DatasetExport.self, DatasetDelete.self])
}

struct DatasetCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a dataset (the same definition again is fine).",
        discussion: "gatehouse dataset create reviews-2026-11 --task classification --label pos --label neg --label neutral --per-item 2")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Dataset name (letters, digits, - _ .).") var name: String
    @Option(help: "classification, multilabel or spans.") var task = "classification"
    @Option(name: .customLong("label"), help: "A label (repeatable, in shortcut order).") var labels: [String] = []
    @Option(help: "Instructions for labellers (Markdown), or @FILE.") var instructions: String?
    @Option(name: .customLong("per-item"), help: "Labels each item needs, from distinct people.") var perItem = 1

    func run() throws {
        try runClient {
            var o = JSONObject([("name", .string(name)), ("task", .string(task)), ("labels", .array(labels.map { .string($0) })), ("annotators_per_item", .int(perItem))])
            if let instructions {
                o.append("instructions", .string(instructions.hasPrefix("@") ? String(decoding: try readInput(String(instructions.dropFirst())), as: UTF8.self) : instructions))
            }
            let answer = try client.client().call("POST", "/v1/datasets", body: Array(JSONValue.object(o).serialized().utf8))
            print(answer.objectValue?["url"]?.stringValue ?? name)
        }
    }
}

struct DatasetAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add items from a file: a JSON array or NDJSON (- reads stdin); idempotent by item id.",
        discussion: #"Each item: {"id": "…", "data": {"text": "…"} or {"image_url": "…"}, "meta": {…}, "prediction": …}"#)
    @OptionGroup var client: ClientOptions
    @Argument(help: "Dataset name.") var name: String
    @Argument(help: "File of items (JSON array or NDJSON); - for stdin.") var file: String

    func run() throws {
        try runClient {
            let body = try readInput(file)
            let first = body.first { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }
            let contentType = first == UInt8(ascii: "[") ? "application/json" : "application/x-ndjson"
            let answer = try client.client(timeout: 600).call("POST", "/v1/datasets/\(percentEncode(name))/items", body: body, contentType: contentType)
            let o = answer.objectValue ?? JSONObject()
            print("added \(Int(o["added"]?.doubleValue ?? 0)), duplicates \(Int(o["duplicates"]?.doubleValue ?? 0)), items now \(Int(o["items"]?.doubleValue ?? 0))")
        }
    }
}

struct DatasetList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List datasets.")
    @OptionGroup var client: ClientOptions
    @Flag(help: "Print JSON.") var json = false
    func run() throws {
        try runClient {
            let answer = try client.client().call("GET", "/v1/datasets")
            if json { printJSON(answer); return }
            print("NAME".padding(toLength: 28, withPad: " ", startingAt: 0) + "TASK            PER ITEM  LABELED/ITEMS")
            for d in (answer.objectValue?["datasets"]?.arrayValue ?? []).compactMap(\.objectValue) {
                print((d["name"]?.stringValue ?? "").padding(toLength: 28, withPad: " ", startingAt: 0)
                    + (d["task"]?.stringValue ?? "").padding(toLength: 16, withPad: " ", startingAt: 0)
                    + String(Int(d["annotators_per_item"]?.doubleValue ?? 1)).padding(toLength: 10, withPad: " ", startingAt: 0)
                    + "\(Int(d["labeled"]?.doubleValue ?? 0))/\(Int(d["items"]?.doubleValue ?? 0))")
            }
        }
    }
}

struct DatasetStatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Totals, per-annotator counts and agreement (kappa).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Dataset name.") var name: String
    @Flag(help: "Print JSON.") var json = false
    func run() throws {
        try runClient {
            let answer = try client.client().call("GET", "/v1/datasets/\(percentEncode(name))/stats")
            if json { printJSON(answer); return }
            let o = answer.objectValue ?? JSONObject()
            func n(_ k: String) -> Int { Int(o[k]?.doubleValue ?? 0) }
            print("total \(n("total")) · labeled \(n("labeled")) · in progress \(n("in_progress")) · skipped \(n("skipped")) · unlabeled \(n("unlabeled"))")
            if let k = o["agreement"]?.doubleValue { print(String(format: "agreement (kappa) %.3f", k)) }
            for (who, count) in o["annotators"]?.objectValue ?? JSONObject() { print("  \(who): \(Int(count.doubleValue ?? 0)) labels") }
        }
    }
}

struct DatasetWait: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait", abstract: "Block until enough items are labeled (exit 0), or the timeout passes (exit 2).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Dataset name.") var name: String
    @Option(help: "Items that must be fully labeled (default: all).") var labeled: Int?
    @Option(help: "Also require this agreement (kappa), e.g. 0.6.") var agreement: Double?
    @Option(help: "Give up after this long (default: wait for ever).") var timeout: String?
    @Flag(help: "Print the final stats as JSON.") var json = false

    func validate() throws {
        if let timeout, GatehouseDuration(timeout) == nil { throw ValidationError("--timeout \(timeout) is not a duration such as 10m") }
    }

    func run() throws {
        let deadline = timeout.flatMap(GatehouseDuration.init).map { Date().addingTimeInterval($0.seconds) }
        var lost = false
        while true {
            let remaining = deadline.map { $0.timeIntervalSinceNow } ?? 300
            let slice = Int(max(0, min(remaining, 300)).rounded(.up))
            var query = ["timeout=\(slice)s"]
            if let labeled { query.append("labeled=\(labeled)") }
            if let agreement { query.append("agreement=\(agreement)") }
            do {
                let answer = try client.client(timeout: Double(slice) + 15).call("GET", "/v1/datasets/\(percentEncode(name))/wait?" + query.joined(separator: "&"))
                let o = answer.objectValue ?? JSONObject()
                if o["reached"]?.boolValue == true || remaining <= 0 {
                    if json { printJSON(o["stats"] ?? .null) }
                    let labeledNow = Int(o["labeled"]?.doubleValue ?? 0), target = Int(o["target"]?.doubleValue ?? 0)
                    let reached = o["reached"]?.boolValue == true
                    FileHandle.standardError.write(Data("gatehouse: \(name): \(labeledNow) of \(target) labeled\(reached ? "" : " — timed out")\n".utf8))
                    throw ExitCode(reached ? 0 : 2)
                }
                lost = false
            } catch let failure as ClientFailure where failure.exitCode == ClientFailure.Code.unavailable {
                if !lost { FileHandle.standardError.write(Data("gatehouse: lost the server (\(failure.message)); reconnecting\n".utf8)) }
                lost = true
                if let deadline, deadline.timeIntervalSinceNow <= 0 { throw ExitCode(2) }
                Thread.sleep(forTimeInterval: 0.5)
            } catch let failure as ClientFailure {
                FileHandle.standardError.write(Data("gatehouse: \(failure.message)\n".utf8))
                throw ExitCode(failure.exitCode)
            }
        }
    }
}

struct DatasetExport: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export", abstract: "Write the labels: jsonl, csv or label-studio.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Dataset name.") var name: String
    @Option(help: "jsonl, csv or label-studio.") var format = "jsonl"
    @Option(name: .shortAndLong, help: "Write to this file instead of stdout.") var output: String?

    func run() throws {
        try runClient {
            let api = client.client(timeout: 600)
            var headers = api.authHeaders
            headers["User-Agent"] = "gatehouse-cli/1"
            let result: HTTPResult
            do {
                result = try HTTPClient(timeout: 600).send(method: "GET", url: api.server + "/v1/datasets/\(percentEncode(name))/export?format=\(percentEncode(format))", headers: headers)
            } catch {
                throw ClientFailure("cannot reach the server at \(api.server): \(error)", exitCode: ClientFailure.Code.unavailable)
            }
            guard (200..<300).contains(result.status) else { throw ClientFailure.from(status: result.status, body: result.body) }
            if let output {
                guard FileManager.default.createFile(atPath: output, contents: Data(result.body)) else {
                    throw ClientFailure("cannot write \(output)", exitCode: ClientFailure.Code.noInput)
                }
            } else {
                FileHandle.standardOutput.write(Data(result.body))
            }
        }
    }
}

struct DatasetDelete: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a dataset with its items and labels.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "Dataset name.") var name: String
    func run() throws {
        try runClient { _ = try client.client().call("DELETE", "/v1/datasets/\(percentEncode(name))") }
    }
}
