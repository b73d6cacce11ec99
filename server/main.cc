// fms-server: the TGIS-compatible front end.

#include <iostream>
#include <string>
#include <vector>

#include "server/app.h"
#include "server/config.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = fms::ParseServerConfig(args, fms::ProcessEnv);
  if (!parsed.ok()) {
    std::cerr << "fms-server: " << parsed.status().message() << "\n";
    return 2;
  }
  if (parsed->help) {
    std::cout << fms::ServerConfigHelp();
    return 0;
  }
  return fms::RunServer(parsed->config);
}
