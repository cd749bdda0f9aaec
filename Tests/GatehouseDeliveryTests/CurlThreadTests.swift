import Foundation
@testable import GatehouseDelivery
import Testing

/// The curl thread carries its name where the system's tools look (`top -H`, /proc): the
/// benchmark's CPU by thread counts libcurl's share by it.
struct CurlThreadTests {
    private static func threadNames() -> [String] {
        let tasks = "/proc/self/task"
        return ((try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []).compactMap {
            (try? String(contentsOfFile: "\(tasks)/\($0)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    @Test func theCurlThreadIsNamedForTheSystem() async throws {
        let client = CurlMultiClient()
        defer { client.shutdown() }
        // The thread names itself as it starts.
        for _ in 0..<200 where !Self.threadNames().contains("gatehouse-curl") { try await Task.sleep(for: .milliseconds(10)) }
        #expect(Self.threadNames().contains("gatehouse-curl"))
    }
}
