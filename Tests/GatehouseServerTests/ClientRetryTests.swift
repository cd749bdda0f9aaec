import Foundation
import GatehouseClient
import Testing

/// The CLI's retry loops (`gate open --key`, `gate wait`) wait what a `503` asks for: a full
/// disk asks 30 s, a locked database 1 s; a lost connection keeps the loops' own half second.
struct ClientRetryTests {
    static let problem = Array(#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"the server's disk is full; nothing was changed"}"#.utf8)

    @Test func aBusyAnswerCarriesItsRetryAfter() {
        let full = ClientFailure.from(status: 503, body: Self.problem, headers: [("Content-Type", "application/problem+json"), ("retry-after", " 30 ")])
        #expect(full.retryAfter == 30)
        #expect(full.message == "the server's disk is full; nothing was changed")
        #expect(ClientFailure.from(status: 503, body: [], headers: []).retryAfter == nil)
        // Nothing a loop should obey: an HTTP date, a negative or absurd number.
        #expect(ClientFailure.from(status: 503, body: [], headers: [("Retry-After", "Wed, 21 Oct 2026 07:28:00 GMT")]).retryAfter == nil)
        #expect(ClientFailure.from(status: 503, body: [], headers: [("Retry-After", "-5")]).retryAfter == nil)
        #expect(ClientFailure.from(status: 503, body: [], headers: [("Retry-After", "inf")]).retryAfter == nil)
        #expect(ClientFailure.from(status: 503, body: [], headers: [("Retry-After", "99999999")]).retryAfter == 3_600)
    }

    @Test func theLoopsWaitWhatWasAskedButNeverPastTheirDeadline() {
        let full = ClientFailure("disk full", exitCode: ClientFailure.Code.serverError, status: 503, retryAfter: 30)
        #expect(full.pause(until: nil) == 30)
        #expect(full.pause(until: Date().addingTimeInterval(3_600)) == 30)
        let soon = full.pause(until: Date().addingTimeInterval(2))
        #expect(soon > 1.5 && soon <= 2)
        #expect(full.pause(until: Date().addingTimeInterval(-1)) == 0)
        // A lost connection has no answer to go by: the half second as before, and never less.
        let lost = ClientFailure("connection refused", exitCode: ClientFailure.Code.unavailable)
        #expect(lost.pause(until: nil) == 0.5)
        #expect(ClientFailure("x", exitCode: 70, status: 503, retryAfter: 0).pause(until: nil) == 0.5)
    }
}
