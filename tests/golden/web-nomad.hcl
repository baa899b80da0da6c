# VM web, exported by vmctl for Nomad's qemu driver.
# image_path must be a disk the client can read: flatten the VM's first
# (`qemu-img convert -O qcow2 /var/lib/vmctl/vms/web/disk.qcow2 web.qcow2`) and point image_path at the copy.
# Nomad's qemu driver forwards these ports on EVERY interface of the client, not on
# 127.0.0.1 as vmctl does: firewall them if the guest's services are private.
job "web" {
  type = "service"

  group "web" {
    network {
      port "tcp_22" { static = 5022 }
      port "tcp_8080" { static = 5080 }
    }

    task "web" {
      driver       = "qemu"
      kill_timeout = "60s"

      config {
        image_path        = "/var/lib/vmctl/vms/web/disk.qcow2"
        accelerator       = "kvm"
        graceful_shutdown = true
        port_map {
          tcp_22 = 22
          tcp_8080 = 8080
        }
        args = [
          "-kernel",
          "/var/lib/vmctl/images/debian-12/x86_64/kernel",
          "-initrd",
          "/var/lib/vmctl/images/debian-12/x86_64/initrd",
          "-append",
          "root=/dev/vda1 rw console=ttyS0 vmctl.name=web",
          "-fw_cfg",
          "name=opt/io.systemd.credentials/vmctl.provision,file=/var/lib/vmctl/vms/web/provision.json",
        ]
      }

      resources {
        cores  = 1
        memory = 2048
      }
    }
  }
}
