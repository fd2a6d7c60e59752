//! The custom-loss expression checker on arbitrary text (the text goes into WGSL): an error or
//! an expression, never a panic; and an expression it accepts cannot leave its place. Spliced
//! into a function as the plan's first compile does, whatever naga makes of it declares nothing
//! else: one function, no global, no entry point, no override.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpu_loss::CustomLossDesc;

fuzz_target!(|data: &[u8]| {
    let expr = String::from_utf8_lossy(data);
    let desc = CustomLossDesc::new(expr.as_ref(), "x", 1);
    if desc.check_expressions().is_err() {
        return;
    }
    let source = format!("fn f(x: f32, y: f32) -> f32 {{\n    return (\n{expr}\n    );\n}}\n");
    if let Ok(module) = naga::front::wgsl::parse_str(&source) {
        assert_eq!(module.functions.len(), 1, "{expr:?} declared a function");
        assert!(module.global_variables.is_empty(), "{expr:?} declared a global");
        assert!(module.entry_points.is_empty(), "{expr:?} declared an entry point");
        assert!(module.overrides.is_empty(), "{expr:?} declared an override");
        assert!(module.constants.is_empty(), "{expr:?} declared a constant");
    }
});
