fn main() {
    println!("vultr-iam-operator");
}
