require ["fileinto", "mailbox"];
if exists "X-Wehr-Quarantine" {
  fileinto :create "Junk";
  stop;
}
