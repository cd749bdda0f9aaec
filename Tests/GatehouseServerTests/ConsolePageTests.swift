import Foundation
import GatehouseClient
import GatehouseCore
import Synchronization
import Testing

@Suite(.serialized)
struct ConsolePageTests {
    /// A console page says where its live updates start (`data-after`): every event up to that
    /// cursor must already be on the page, or the stream never tells the page about it and it
    /// stays stale for good on `/`, `/events` and `/gates`, which follow events only. The
    /// cursor was read after the page's data, so an event committed in between was on neither
    /// (a hostile tester saw 277 of 300 pages under load miss one). Events are committed
    /// without pause while the page is loaded again and again.
    @Test func aPageShowsEveryEventUpToTheCursorItFollowsFrom() async throws {
        try await offThePool {
            let dir = TempDir()
            let server = try ServerProcess(dir: dir, db: testDatabase(dir))
            let login = try server.post("/login", "name=ops&next=/events", contentType: "application/x-www-form-urlencoded")
            let cookie = try #require(WebSessionTests.cookie(login))
            let stop = Atomic<Bool>(false)
            let base = server.url
            let writer = Thread {
                var n = 0
                while !stop.load(ordering: .relaxed) && n < 2000 {
                    let body = #"{"type":"run.started","pipeline":"race","run":"r\#(n)","summary":"event number \#(n) here"}"#
                    _ = try? HTTPClient().send(method: "POST", url: base + "/v1/events", headers: ["Content-Type": "application/json"], body: Array(body.utf8))
                    n += 1
                }
            }
            writer.start()
            defer { stop.store(true, ordering: .relaxed) }
            var checked = 0
            for _ in 0..<80 {
                let page = try server.request("GET", "/events?pipeline=race", headers: ["Cookie": cookie, "Accept": "text/html"])
                #expect(page.status == 200)
                guard let match = page.text.firstMatch(of: /data-after="(\d+)"/), let after = Int(match.1), after > 0 else { continue }
                let newest = try server.json("/v1/events?after=\(after - 1)&limit=1")["events"]?.arrayValue?.first?.objectValue
                let summary = try #require(newest?["summary"]?.stringValue)
                #expect(page.text.contains(summary + "<"), "the page follows from \(after) but does not show \(summary)")
                checked += 1
            }
            #expect(checked > 40)
        }
    }
}
