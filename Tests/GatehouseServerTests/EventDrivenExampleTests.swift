import Foundation
import GatehouseClient
import GatehouseCore
import Testing

/// examples/event-driven as a user runs it: the server with the example's gatehouse.yml, the
/// example's resume.py receiving signed CloudEvents, and pipeline-step.sh that only emits an
/// event and waits on the key.
struct EventDrivenExampleTests {
    static let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("examples/event-driven").path
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    /// resume.py on a free port; what it resumed is appended to `log`.
    final class Resumer {
        let process = Process()
        let port: Int

        init(log: String) throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = ["-u", EventDrivenExampleTests.example + "/resume.py", "--port", "0", "--log", log]
            process.environment = ["RESUME_SECRET": EventDrivenExampleTests.secret, "PATH": "/usr/bin:/bin"]
            let line = try firstLine(of: process)
            guard let port = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) else {
                throw ServerProcess.ServerStartFailure(output: "resume.py: \(line)")
            }
            self.port = port
        }

        deinit {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }

    /// Runs pipeline-step.sh in the background.
    func step(_ run: String, auc: String, server: ServerProcess) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Self.example + "/pipeline-step.sh", run, auc]
        process.environment = ["GATEHOUSE_URL": server.url, "GATEHOUSE_BIN": gatehouseBinary(), "WAIT": "30s", "PATH": "/usr/bin:/bin"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    func eventually(_ timeout: Double = 10, _ check: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try check() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return try check()
    }

    @Test func thePipelineStepWaitsOnTheKeyAndTheResumerHearsTheDecision() async throws {
        try await offThePool {
            let dir = TempDir()
            let log = dir.file("resumed.txt")
            let resumer = try Resumer(log: log)
            let server = try ServerProcess(dir: dir, arguments: ["--config", Self.example + "/gatehouse.yml"], environment: [
                "RESUME_URL": "http://127.0.0.1:\(resumer.port)/", "RESUME_SECRET": Self.secret,
            ])
            let resumed = { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

            // Path 1: the step blocks on the key until a person approves.
            let blocked = try step("r42", auc: "0.95", server: server)
            var gateID: String?
            #expect(try eventually {
                gateID = try JSONValue.parse(server.get("/v1/gates?state=pending").text).objectValue?["gates"]?.arrayValue?
                    .compactMap(\.objectValue).first { $0["key"] == .string("r42/deploy") }?["id"]?.stringValue
                return gateID != nil
            })
            #expect(blocked.isRunning)
            let id = try #require(gateID)
            #expect(try server.post("/v1/gates/\(id)/decisions", #"{"decision": "approve", "by": "web:bob"}"#).status == 200)
            #expect(eventually { !blocked.isRunning })
            blocked.waitUntilExit()
            #expect(blocked.terminationStatus == 0)
            // Path 2: the resumer got the signed CloudEvent for the decision.
            #expect(eventually { resumed().contains("approved r42 r42/deploy") }, "\(resumed())")

            // A model good enough for the rule's policy is approved at once: the step exits 0.
            let fast = try step("r43", auc: "0.995", server: server)
            fast.waitUntilExit()
            #expect(fast.terminationStatus == 0)
            #expect(eventually { resumed().contains("approved r43 r43/deploy") }, "\(resumed())")
            // Only decisions resume anything: model.registered and gate.opened were ignored.
            #expect(resumed().split(separator: "\n").count == 2)
            withExtendedLifetime(resumer) {}
        }
    }
}
