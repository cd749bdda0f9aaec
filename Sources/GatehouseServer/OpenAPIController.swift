import GatehouseCore
import GatehouseResources
import Hummingbird
import NIOCore
import Yams

/// `GET /openapi.json`: the API description (`docs/openapi.yaml`, compiled into the binary),
/// converted to JSON once per process. No token needed: it describes, it holds nothing secret.
struct OpenAPIController {
    func addRoutes(to router: Router<GatehouseContext>) {
        let document = OpenAPIDocument.shipped
        router.get("/openapi.json") { _, _ in
            switch document {
            case .success(let bytes):
                return Response(
                    status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-cache"],
                    body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            case .failure(let error):
                throw Problem(status: 500, title: "Internal Server Error", detail: "the embedded API description is broken: \(error)")
            }
        }
    }
}

public enum OpenAPIDocument {
    /// The embedded document as JSON bytes (or why it could not be converted); computed on
    /// first use, which is when the router is built at start-up.
    public static let shipped: Result<[UInt8], any Error> = Result(catching: { Array(try json(fromYAML: EmbeddedResources.openAPIYAML).serialized().utf8) })

    /// YAML → JSON keeping the order of keys; scalars typed by YAML 1.2's core schema, mapping
    /// keys always strings (`200:` is the key "200").
    public static func json(fromYAML yaml: String) throws -> JSONValue {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch {
            throw OpenAPIConversionError(description: "docs/openapi.yaml is not YAML: \(error)")
        }
        guard let node else { throw OpenAPIConversionError(description: "docs/openapi.yaml is empty") }
        return try convert(node)
    }

    static func convert(_ node: Node) throws -> JSONValue {
        switch node {
        case .scalar(let scalar):
            switch node.tag.rawValue {
            case Tag.Name.null.rawValue: return .null
            case Tag.Name.bool.rawValue: if let b = node.bool { return .bool(b) }
            case Tag.Name.int.rawValue: if let i = node.int { return .int(i) }
            case Tag.Name.float.rawValue: if let d = node.float, d.isFinite { return .double(d) }
            default: break
            }
            return .string(scalar.string)
        case .mapping(let mapping):
            var object = JSONObject()
            for (key, value) in mapping {
                guard case .scalar(let k) = key else { throw OpenAPIConversionError(description: "a mapping key at line \(key.mark?.line ?? 0) is not a scalar") }
                object.append(k.string, try convert(value))
            }
            return .object(object)
        case .sequence(let sequence):
            return .array(try sequence.map(convert))
        case .alias(let alias):
            throw OpenAPIConversionError(description: "YAML aliases are not supported (line \(alias.mark?.line ?? 0))")
        }
    }
}

public struct OpenAPIConversionError: Error, CustomStringConvertible, Sendable {
    public var description: String
}
