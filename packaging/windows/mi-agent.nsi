; mi-agent installer for 64-bit Windows (NSIS 3, Unicode, amd64).
;
; Build (packaging/windows/build-installers.sh does this):
;   makensis -DVERSION=0.1.0 -DAGENT_EXE=/path/mi-agent.exe -DOUT_FILE=/path/mi-agent-0.1.0-setup.exe mi-agent.nsi
;
; Install:   mi-agent-<version>-setup.exe [/S] [/PORT=50342] [/D=C:\Program Files\mi-agent]
;   Installs mi-agent.exe, writes %ProgramData%\mi-agent\config.json unless it
;   exists (an operator's config survives upgrades), writes the discovery file
;   %SystemDrive%\WindowsAzure\Config\ManagedIdentity-Settings for /PORT,
;   registers the service (`mi-agent.exe install`: auto-start, restart on
;   failure) and starts it. Installing over an older version stops it first.
; Uninstall: "C:\Program Files\mi-agent\uninstall.exe" [/S] [/REMOVECONFIG]
;   Stops the service (waiting for its drain), deletes it, removes the program,
;   the discovery file and the logs. The config stays unless /REMOVECONFIG.

Unicode true
Target amd64-unicode
ManifestSupportedOS all

!include "LogicLib.nsh"
!include "FileFunc.nsh"

!ifndef VERSION
  !define VERSION "0.0.0"
!endif
!ifndef AGENT_EXE
  !error "define AGENT_EXE (path of mi-agent.exe)"
!endif
!ifndef OUT_FILE
  !define OUT_FILE "mi-agent-${VERSION}-setup.exe"
!endif

!define SERVICE "mi-agent"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\mi-agent"

Name "mi-agent ${VERSION}"
OutFile "${OUT_FILE}"
InstallDir "$PROGRAMFILES64\mi-agent"
RequestExecutionLevel admin
ShowInstDetails show
ShowUninstDetails show
SetCompressor /SOLID lzma
VIProductVersion "${VERSION}.0"
VIAddVersionKey "ProductName" "mi-agent"
VIAddVersionKey "FileDescription" "mi-agent (managed identity token agent) installer"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "LegalCopyright" "mi-agent authors"

Page directory
Page instfiles
UninstPage uninstConfirm
UninstPage instfiles

Var Port

Function .onInit
  SetRegView 64
  SetShellVarContext all
  StrCpy $Port "50342"
  ${GetParameters} $R0
  ClearErrors
  ${GetOptions} $R0 "/PORT=" $R1
  ${IfNot} ${Errors}
    StrCpy $Port $R1
  ${EndIf}
  IntOp $R2 $Port + 0
  ${If} $R2 < 1
  ${OrIf} $R2 > 65535
    MessageBox MB_ICONSTOP "mi-agent: /PORT=$Port is not a TCP port" /SD IDOK
    Abort
  ${EndIf}
FunctionEnd

Function un.onInit
  SetRegView 64
  SetShellVarContext all
FunctionEnd

Section "mi-agent"
  SetOutPath "$INSTDIR"
  ; An upgrade: stop the running service (net stop waits for the drain) so
  ; that its exe can be replaced; `install` below updates the registration.
  ${If} ${FileExists} "$INSTDIR\mi-agent.exe"
    DetailPrint "Stopping the running ${SERVICE} service"
    nsExec::ExecToLog '"$SYSDIR\net.exe" stop ${SERVICE}'
    Pop $0
  ${EndIf}
  File "/oname=mi-agent.exe" "${AGENT_EXE}"
  WriteUninstaller "$INSTDIR\uninstall.exe"

  ; Configuration: %ProgramData%\mi-agent\config.json; never overwrite an existing one.
  CreateDirectory "$APPDATA\mi-agent"
  ${IfNot} ${FileExists} "$APPDATA\mi-agent\config.json"
    DetailPrint "Writing $APPDATA\mi-agent\config.json (port $Port)"
    FileOpen $0 "$APPDATA\mi-agent\config.json" w
    FileWrite $0 '{$\r$\n  "port": $Port$\r$\n}$\r$\n'
    FileClose $0
  ${EndIf}

  ; The discovery file old client libraries read to find the endpoint.
  ReadEnvStr $1 "SystemDrive"
  ${If} $1 == ""
    StrCpy $1 "C:"
  ${EndIf}
  CreateDirectory "$1\WindowsAzure\Config"
  FileOpen $0 "$1\WindowsAzure\Config\ManagedIdentity-Settings" w
  FileWrite $0 '{"url":"http://localhost:$Port/oauth2/token"}'
  FileClose $0

  ; The service: registered by the agent itself (auto-start, restart on failure).
  DetailPrint "Registering the ${SERVICE} service"
  nsExec::ExecToLog '"$INSTDIR\mi-agent.exe" install'
  Pop $0
  ${If} $0 != 0
    MessageBox MB_ICONSTOP "mi-agent: registering the service failed ($0)" /SD IDOK
    Abort
  ${EndIf}
  DetailPrint "Starting the ${SERVICE} service"
  nsExec::ExecToLog '"$SYSDIR\sc.exe" start ${SERVICE}'
  Pop $0

  ; Programs and Features.
  WriteRegStr HKLM "${UNINSTALL_KEY}" "DisplayName" "mi-agent (managed identity token agent)"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "Publisher" "mi-agent"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKLM "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKLM "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKLM "${UNINSTALL_KEY}" "NoRepair" 1
SectionEnd

Section "Uninstall"
  ; Stops the service (waiting for the drain) and deletes it.
  ${If} ${FileExists} "$INSTDIR\mi-agent.exe"
    nsExec::ExecToLog '"$INSTDIR\mi-agent.exe" uninstall'
    Pop $0
  ${Else}
    nsExec::ExecToLog '"$SYSDIR\net.exe" stop ${SERVICE}'
    Pop $0
    nsExec::ExecToLog '"$SYSDIR\sc.exe" delete ${SERVICE}'
    Pop $0
  ${EndIf}

  Delete "$INSTDIR\mi-agent.exe"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"

  ReadEnvStr $1 "SystemDrive"
  ${If} $1 == ""
    StrCpy $1 "C:"
  ${EndIf}
  Delete "$1\WindowsAzure\Config\ManagedIdentity-Settings"
  RMDir "$1\WindowsAzure\Config"
  RMDir "$1\WindowsAzure"

  Delete "$APPDATA\mi-agent\mi-agent.log"
  Delete "$APPDATA\mi-agent\mi-agent.log.1"
  ${un.GetParameters} $R0
  ClearErrors
  ${un.GetOptions} $R0 "/REMOVECONFIG" $R1
  ${IfNot} ${Errors}
    Delete "$APPDATA\mi-agent\config.json"
  ${EndIf}
  RMDir "$APPDATA\mi-agent"

  DeleteRegKey HKLM "${UNINSTALL_KEY}"
SectionEnd
