//! Host bindings generated from `wit/`. Every import is async (storage calls await the
//! database) and trappable (a host bug traps; storage outcomes are WIT `error` values).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "alga:storage/imports",
    imports: { default: async | trappable },
});

pub use alga::storage::store;
