// The signature checks and the config file reader live in modules of their own, small enough
// to fuzz (Fuzz/), and are part of the server's API as before.
@_exported import GatehouseConfigFile
@_exported import GatehouseSignatures
