import GatehouseCore

/// A platform's typed settings that can make its receiver. Each platform folder declares one
/// (`SlackSettings`, `DiscordSettings`, `MattermostSettings`, `WebhookSettings`): the config
/// file is checked against it (`gatehouse config check`, with line numbers), and the server
/// builds its receivers from it — one place per platform says which keys exist.
public protocol PlatformReceiverSettings: PlatformSettings {
    func makeReceiver(name: String, templates: TemplateSet) throws -> any Receiver
}

public enum Platforms {
    /// The settings type of each platform.
    public static func settingsType(_ kind: GatehouseConfig.ReceiverKind) -> any PlatformReceiverSettings.Type {
        switch kind {
        case .slack: SlackSettings.self
        case .discord: DiscordSettings.self
        case .mattermost: MattermostSettings.self
        case .webhook: WebhookSettings.self
        }
    }

    /// A receiver's settings, typed and checked.
    public static func settings(of receiver: GatehouseConfig.Receiver) -> Result<any PlatformReceiverSettings, SettingsProblems> {
        settingsType(receiver.kind).decodeAny(receiver.settings)
    }

    /// The receiver a config entry describes.
    public static func makeReceiver(_ receiver: GatehouseConfig.Receiver, templates: TemplateSet) throws -> any Receiver {
        switch settings(of: receiver) {
        case .success(let settings): return try settings.makeReceiver(name: receiver.name, templates: templates)
        case .failure(let problems): throw DeliveryError("receiver \(receiver.name): \(problems.summary)")
        }
    }
}

extension PlatformReceiverSettings {
    static func decodeAny(_ settings: [String: Secret]) -> Result<any PlatformReceiverSettings, SettingsProblems> {
        decode(settings).map { $0 }
    }
}

/// Fields set on every message a receiver posts (a channel, a display name, an icon), where the
/// platform lets an incoming webhook choose them.
public struct PosterOverrides: Sendable, Equatable {
    public var fields: [(String, String)]
    public init(_ fields: [(String, String?)]) { self.fields = fields.compactMap { key, value in value.map { (key, $0) } } }
    public static let none = PosterOverrides([])

    public static func == (a: PosterOverrides, b: PosterOverrides) -> Bool { a.fields.elementsEqual(b.fields) { $0 == $1 } }

    /// The rendered JSON body with the fields set at its top level (unchanged without any).
    func apply(to body: String) throws -> String {
        guard !fields.isEmpty, var object = try JSONValue.parse(body).objectValue else { return body }
        for (key, value) in fields { object[key] = .string(value) }
        return JSONValue.object(object).serialized()
    }
}
