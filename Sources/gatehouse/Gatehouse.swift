import ArgumentParser
import Foundation
import GatehouseClient
import GatehouseCore

@main
struct Gatehouse: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatehouse",
        abstract: "Put people into machine-learning pipelines: alerts, approval gates, labelling.",
        subcommands: [
            Serve.self, Emit.self, EventsCommand.self, RunsCommand.self, DeliveriesCommand.self, SilenceCommand.self,
            RoutesCommand.self, GateCommand.self, AuditCommand.self, DatasetCommand.self, TokenCommand.self, ConfigCommand.self,
            MigrateCommand.self,
        ]
    )

    /// ArgumentParser's own entry point, except that a usage error in `gate open --wait` or
    /// `gate wait` exits 4 as docs/gates.md says (a pipeline reads 1 as "rejected", 2 as
    /// "expired": a typo must not look like either).
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        let waiting = arguments.first == "gate" && (arguments.dropFirst().first == "wait" || arguments.contains("--wait"))
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if waiting, !(error is ExitCode), exitCode(for: error) != .success {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(GateExit.error)
            }
            exit(withError: error)
        }
    }
}

/// `--server` / `--token`, shared by every command that talks to a server.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "Server URL (env GATEHOUSE_URL; default http://127.0.0.1:8080).")
    var server: String?

    @Option(name: .long, help: "API token (env GATEHOUSE_TOKEN).")
    var token: String?

    func client(timeout: Double = 30) -> APIClient {
        let env = ProcessInfo.processInfo.environment
        let url = server ?? env["GATEHOUSE_URL"] ?? "http://127.0.0.1:8080"
        return APIClient(server: url, token: token ?? env["GATEHOUSE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }, timeout: timeout)
    }
}

/// Runs a client command body, turning failures into one clear line on stderr and a distinct
/// exit code.
func runClient(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let failure as ClientFailure {
        FileHandle.standardError.write(Data("gatehouse: \(failure.message)\n".utf8))
        throw ExitCode(failure.exitCode)
    }
}

/// The same for commands that await (offline commands run the services in process).
func runClient(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let failure as ClientFailure {
        FileHandle.standardError.write(Data("gatehouse: \(failure.message)\n".utf8))
        throw ExitCode(failure.exitCode)
    }
}

func printJSON(_ value: JSONValue) {
    print(value.serialized())
}

func readInput(_ path: String) throws -> [UInt8] {
    if path == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ClientFailure("cannot read \(path)", exitCode: ClientFailure.Code.noInput)
    }
    return Array(data)
}
