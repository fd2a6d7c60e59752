fn main() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    for a in adapters {
        println!("{:?}", a.get_info());
        println!("{:?}", a.features());
        println!("{:#?}", a.limits());
    }
}
