//! `lamctl status CTID`: vzctl's one-line status, exit 0 even for a
//! container that does not exist.

use lamina_engine::container::ContainerError;
use lamina_engine::container::instance::Status;
use lamina_engine::container::layout::Layout;

use super::resolve;

pub fn run(layout: &Layout, ctid: &str) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, ctid)?;
    println!("{}", Status::of(layout, ctid)?);
    Ok(0)
}
