import Foundation
import GatehouseCore
import GatehouseServer
import Testing

/// Inputs Fuzz/fuzz-config found, replayed: loading a config gives the same issues every time.
struct ConfigFuzzRegressionTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/fuzz-config")

    @Test func loadingIsDeterministic() async throws {
        try await offThePool {
            for name in try FileManager.default.contentsOfDirectory(atPath: Self.folder.path) {
                let data = try Data(contentsOf: Self.folder.appendingPathComponent(name))
                let text = String(decoding: data, as: UTF8.self)
                let loader = ConfigLoader(environment: [:])
                let first = loader.load(yaml: text).issues
                let second = loader.load(yaml: text).issues
                #expect(first == second, "\(name): \(first) vs \(second)")
            }
        }
    }

    /// A hostile tester's 653-byte file: anchors seven deep, ten aliases each, name ten million
    /// routes; config check took 56 s and 5 GB. Refused at once now, and an ordinary use of
    /// aliases still loads.
    @Test func anAliasBombIsRefusedAtOnce() {
        var yaml = "receivers:\n  - name: x\n    webhook: { url: http://127.0.0.1:1/x }\nx-r0: &r0 {receiver: x}\n"
        for level in 1...7 {
            yaml += "x-r\(level): &r\(level) {receiver: x, routes: [" + Array(repeating: "*r\(level - 1)", count: 10).joined(separator: ", ") + "]}\n"
        }
        yaml += "route: {receiver: x, routes: [*r7]}\n"
        let started = ContinuousClock.now
        let loaded = ConfigLoader(environment: [:]).load(yaml: yaml)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(loaded.issues.map(\.message).contains { $0.contains("expands to more than 200000 YAML nodes") }, "\(loaded.issues)")

        let shared = """
            receivers:
              - name: a
                webhook: &hook { url: http://127.0.0.1:1/a }
              - name: b
                webhook: *hook
            route: { receiver: a, routes: [{ receiver: b, matchers: ['pipeline="p"'] }] }
            """
        #expect(ConfigLoader(environment: [:]).load(yaml: shared).issues.isEmpty)
    }
}
