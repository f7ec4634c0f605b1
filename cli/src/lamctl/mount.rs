//! `lamctl mount CTID` and `lamctl umount CTID`.

use lamina_engine::container::ContainerError;
use lamina_engine::container::layout::Layout;
use lamina_engine::container::lifecycle::{self, Outcome};

use super::{Output, resolve};

pub fn mount(layout: &Layout, ctid: &str, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, ctid)?;
    match lifecycle::mount(layout, ctid)? {
        Outcome::AlreadyDone => out.say("Container is already mounted"),
        Outcome::Done => out.say("Container is mounted"),
    }
    Ok(0)
}

pub fn umount(layout: &Layout, ctid: &str, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, ctid)?;
    lifecycle::umount(layout, ctid)?;
    out.say("Container is unmounted");
    Ok(0)
}
