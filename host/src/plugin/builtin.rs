//! The default plugins, built from `plugins/` for wasm32-wasip2 by build.rs and embedded here.

use super::world::World;

/// The embedded component of each world's default plugin.
pub fn component(world: World) -> &'static [u8] {
    match world {
        World::Whitelist => include_bytes!(concat!(env!("OUT_DIR"), "/plugins/whitelist.wasm")),
        World::PathFilter => include_bytes!(concat!(env!("OUT_DIR"), "/plugins/path-filter.wasm")),
        World::PurgePolicy => {
            include_bytes!(concat!(env!("OUT_DIR"), "/plugins/purge-policy.wasm"))
        }
    }
}

/// The name a built-in plugin goes by in logs and status.
pub fn name(world: World) -> String {
    format!("builtin:{world}")
}
