//! `lamctl destroy CTID` (alias `delete`).

use lamina_engine::container::ContainerError;
use lamina_engine::container::layout::Layout;
use lamina_engine::container::lifecycle;

use super::{Output, resolve};

pub fn run(layout: &Layout, ctid: &str, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, ctid)?;
    out.say("Destroying container private area");
    lifecycle::destroy(layout, ctid)?;
    out.say("Container private area was destroyed");
    Ok(0)
}
