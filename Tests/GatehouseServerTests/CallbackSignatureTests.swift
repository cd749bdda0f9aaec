import Foundation
import GatehouseCore
@testable import GatehouseServer
import Testing

/// The test vectors of docs/platforms/slack.md and discord.md, checked against our verifiers.
struct CallbackSignatureTests {
    static let slackSecret = "8f742231b10e8888abcd99yyyzzz85a5"

    /// The Date header of answers written by the wait room (RFC 9110's own example).
    @Test func httpDates() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
    }

    @Test func slackVectorsFromTheProtocolNotes() {
        let slack = SlackSignature(secret: Self.slackSecret)
        let body1 = Array("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c".utf8)
        #expect(slack.signature(timestamp: "1531420618", body: body1) == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503")
        let body2 = Array("payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U1%22%2C%22username%22%3A%22alice%22%7D%2C%22actions%22%3A%5B%7B%22action_id%22%3A%22approve%22%2C%22value%22%3A%22run-42%22%7D%5D%7D".utf8)
        let sig2 = "v0=dc1e2a11906a464f6af6897bb647477da3d451b1f29e0040c95af229a8b04eea"
        #expect(slack.verify(timestamp: "1700000010", signature: sig2, body: body2, now: 1_700_000_010) == .valid)
        // Exactly 300 s is inside the window, 301 s is not.
        #expect(slack.verify(timestamp: "1700000010", signature: sig2, body: body2, now: 1_700_000_310) == .valid)
        #expect(slack.verify(timestamp: "1700000010", signature: sig2, body: body2, now: 1_700_000_311) == .stale)
        #expect(slack.verify(timestamp: "1700000010", signature: sig2, body: body2 + [0x20], now: 1_700_000_010) == .badSignature)
        #expect(slack.verify(timestamp: nil, signature: sig2, body: body2, now: 1_700_000_010) == .missing)
        // A timestamp at Int64's ends is stale, not an overflow (it crashed the server, unsigned).
        for extreme in ["-9223372036854775808", "9223372036854775807", "-9223372036854775000"] {
            #expect(slack.verify(timestamp: extreme, signature: sig2, body: body2, now: 1_700_000_010) == .stale)
        }
        #expect(CallbackClock.within(300, seconds: .min, of: .max) == false && CallbackClock.within(300, seconds: 5, of: 305))
        #expect(SlackSignature(secret: "other").verify(timestamp: "1700000010", signature: sig2, body: body2, now: 1_700_000_010) == .badSignature)
        // The payload decodes to what the click handler reads.
        let claim = CallbacksController.slackClaim(body2)
        #expect(claim.user == "U1" && claim.action == "approve" && claim.gate == "run-42")
    }

    @Test func discordVectorsFromTheProtocolNotes() async throws {
        try await offThePool {
            let discord = try #require(DiscordSignature(publicKeyHex: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))
            let ping = Array(#"{"type":1}"#.utf8)
            let sig = "1695961a47c91a1ec033b819b7e87e3dbc583dd0cee6d1fd0216f58ac87b6228ae531ddbf91fb7bc28d7edf7f08604da16f54624f38a6bc0614e4dc13cd47f0f"
            #expect(discord.isValid(timestamp: "1700000000", signatureHex: sig, body: ping))
            #expect(!discord.isValid(timestamp: "1700000001", signatureHex: sig, body: ping))
            let click = Array(#"{"type":3,"id":"1","application_id":"2","token":"t","version":1,"data":{"custom_id":"approve:run-42","component_type":2}}"#.utf8)
            let sig2 = "c2a8cd7e435198470ac40fbd92631517069583dbe26248f383ca6e9bdbab63be3a0ddb0b1b8b7fd0d4160bd92a16308545922806393ab3a6cb7151c3d479c408"
            #expect(discord.isValid(timestamp: "1700000000", signatureHex: sig2, body: click))
            #expect(!discord.isValid(timestamp: "1700000000", signatureHex: sig2, body: ping))
            #expect(!discord.isValid(timestamp: "1700000000", signatureHex: "zz", body: ping))
            #expect(DiscordSignature(publicKeyHex: "1234") == nil)
        }
    }

    @Test func linksCSRFAndMattermostTokens() {
        let signer = LinkSigner(key: Array(repeating: 7, count: 32))
        let expires = Timestamp.now().adding(milliseconds: 60_000)
        let token = signer.token(gate: "gate_1", by: "web:bob", expires: expires)
        #expect(signer.verify(token) == LinkSigner.Claims(gate: "gate_1", by: "web:bob", expires: Timestamp(milliseconds: expires.milliseconds / 1000 * 1000)))
        // Another key, a changed payload, or an expired link: refused.
        #expect(LinkSigner(key: Array(repeating: 8, count: 32)).verify(token) == nil)
        let parts = token.split(separator: ".")
        let forged = "v1." + LinkSigner.base64url(Array("gate_1|web:eve|\(expires.milliseconds / 1000)".utf8)) + "." + parts[2]
        #expect(signer.verify(forged) == nil)
        #expect(signer.verify(token, now: expires.adding(milliseconds: 1000)) == nil)
        let csrf = signer.csrf(cookie: "c00kie", gate: "gate_1")
        #expect(signer.checkCSRF(csrf, cookie: "c00kie", gate: "gate_1"))
        #expect(!signer.checkCSRF(csrf, cookie: "other", gate: "gate_1") && !signer.checkCSRF(csrf, cookie: "c00kie", gate: "gate_2"))
        let mm = signer.contextToken(gate: "gate_1", action: "approve")
        #expect(signer.checkContextToken(mm, gate: "gate_1", action: "approve"))
        #expect(!signer.checkContextToken(mm, gate: "gate_1", action: "reject") && !signer.checkContextToken("00", gate: "gate_1", action: "approve"))
    }
}
