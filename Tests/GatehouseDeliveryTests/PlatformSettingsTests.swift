import GatehouseCore
@testable import GatehouseDelivery
import Testing

/// Each platform's settings type says which keys exist, which are required and what a valid
/// value is; the receiver built from it sends what the settings ask for.
struct PlatformSettingsTests {
    func settings(_ pairs: [String: String]) -> [String: Secret] { pairs.mapValues(Secret.init) }

    func problems<T: PlatformSettings>(_ type: T.Type, _ pairs: [String: String]) -> [String] {
        guard case .failure(let problems) = T.decode(settings(pairs)) else { return [] }
        return problems.all.map(\.message)
    }

    @Test func requiredKeysURLsAndTyposAreNamed() {
        #expect(problems(SlackSettings.self, [:]) == ["slack.webhook_url is required"])
        #expect(problems(SlackSettings.self, ["webhook_url": "hooks.slack.com/x"]) == ["slack.webhook_url must be an http(s) URL"])
        // A typo is named with its likely meaning, ahead of what it left missing.
        #expect(problems(SlackSettings.self, ["webhok_url": "https://h/x"]) == [
            "unknown key \"webhok_url\" in receiver slack (did you mean webhook_url?)", "slack.webhook_url is required",
        ])
        #expect(problems(MattermostSettings.self, ["webhook_url": "https://mm/x", "colour": "red"]) == ["unknown key \"colour\" in receiver mattermost"])
        #expect(problems(DiscordSettings.self, ["webhook_url": "https://d/x", "public_key": "abc"]) == [
            "discord.public_key must be the application's Ed25519 public key (64 hex digits)",
        ])
        #expect(problems(WebhookSettings.self, ["url": "https://h/x", "secret": "whsec_!!"]) == ["webhook.secret must be whsec_ followed by base64"])
        #expect(problems(WebhookSettings.self, ["url": "https://h/x", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).isEmpty)
    }

    @Test func buttonsFollowTheSettingsThatProveClicks() throws {
        let plain = try SlackSettings.decode(settings(["webhook_url": "https://h/x", "signing_secret": "  "])).get()
        #expect(plain.signingSecret == nil)
        let app = try SlackSettings.decode(settings(["webhook_url": "https://h/x", "signing_secret": "s3cret"])).get()
        #expect(app.signingSecret?.value == "s3cret")
        let key = String(repeating: "ab", count: 32)
        #expect(try DiscordSettings.decode(settings(["webhook_url": "https://d/x", "public_key": key])).get().publicKey == key)
    }

    @Test func posterSettingsAreSentWithEachNewMessage() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let now = Timestamp(milliseconds: 1_795_946_400_000)
        let slack = try SlackSettings.decode(settings(["webhook_url": "https://h/x", "channel": "#ml-alerts", "username": "gatehouse", "icon_emoji": ":robot_face:"]))
            .get().makeReceiver(name: "s", templates: templates)
        let s = try body(slack.request(for: message(), now: now))
        #expect(s["channel"] == .string("#ml-alerts") && s["username"] == .string("gatehouse") && s["icon_emoji"] == .string(":robot_face:"))
        #expect(s["blocks"]?.arrayValue?.isEmpty == false)

        let mattermost = try MattermostSettings.decode(settings(["webhook_url": "https://mm/x", "channel": "town-square", "icon_url": "https://img/x.png"]))
            .get().makeReceiver(name: "m", templates: templates)
        let m = try body(mattermost.request(for: message(), now: now))
        #expect(m["channel"] == .string("town-square") && m["icon_url"] == .string("https://img/x.png") && m["username"] == nil)

        let discord = try DiscordSettings.decode(settings(["webhook_url": "https://d/x", "username": "Gatehouse"])).get().makeReceiver(name: "d", templates: templates)
        #expect(try body(discord.request(for: message(), now: now))["username"] == .string("Gatehouse"))

        // Without such settings the body is the template's, byte for byte.
        let bare = try SlackSettings.decode(settings(["webhook_url": "https://h/x"])).get().makeReceiver(name: "b", templates: templates)
        let direct = SlackReceiver(name: "b", webhookURL: Secret("https://h/x"), templates: templates)
        #expect(try bare.request(for: message(), now: now).body == direct.request(for: message(), now: now).body)
    }
}
