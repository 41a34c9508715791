// vcsimx is Sterna's vSphere test peer: govmomi's vCenter simulator (as packaged by Debian,
// govmomi 0.24) plus the calls that simulator lacks and that a migration source needs:
//
//   - VirtualMachine.ExportVm and VirtualMachineSnapshot.ExportSnapshot hand out an
//     HttpNfcLease whose device URLs serve each disk's backing file (HTTP GET with Range);
//   - VirtualMachine.QueryChangedDiskAreas answers changed block tracking queries.
//
// Change tracking is modelled on content, not on a write log (the simulator has no I/O path):
// whenever a snapshot of a VM with changeTrackingEnabled is created, every disk of the snapshot
// gets a fresh changeId and the shim remembers a fingerprint (one hash per 64 KiB block) of the
// disk's guest-visible bytes at that moment. Asking for changes since a changeId compares that
// fingerprint with the current one; changeId "*" returns the allocated areas. Guest-visible bytes
// come from qemu-img, so a backing file may be raw or any VMDK flavour (e.g. streamOptimized).
//
// Usage: vcsimx [-l 127.0.0.1:0] [-tls] [-vm N] [-nfc-stream] [-tools] [-user NAME]   (password: $VCSIMX_PASSWORD)
// Prints "VCSIMX_URL <url>" once listening, then serves until SIGINT/SIGTERM.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"io/ioutil"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

const blockSize = 64 * 1024

const envelope = `<?xml version="1.0" encoding="UTF-8"?>` +
	`<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ` +
	`xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">` +
	`<soapenv:Body>%s</soapenv:Body></soapenv:Envelope>`

// baseURL is where device URLs of leases point (scheme://host:port of this server).
var baseURL string

// streamNFC makes lease URLs behave like a real vCenter's generated export stream:
// no Content-Length, and Range requests answered with the whole file.
var streamNFC bool

// leases maps a lease id to its served files: "disk-<key>.vmdk" -> local path.
var leases sync.Map

// ---------------------------------------------------------------- disks and datastores

// localPath turns "[ds] dir/file.vmdk" into the datastore's local file.
func localPath(name string) string {
	i := strings.Index(name, "]")
	if !strings.HasPrefix(name, "[") || i < 0 {
		return ""
	}
	dsName, rel := name[1:i], strings.TrimSpace(name[i+1:])
	for _, e := range simulator.Map.All("Datastore") {
		if ds := e.(*simulator.Datastore); ds.Name == dsName {
			return filepath.Join(ds.Info.GetDatastoreInfo().Url, rel)
		}
	}
	return ""
}

func disksOf(devices []types.BaseVirtualDevice) []*types.VirtualDisk {
	var out []*types.VirtualDisk
	for _, d := range devices {
		if disk, ok := d.(*types.VirtualDisk); ok {
			out = append(out, disk)
		}
	}
	return out
}

func diskPath(d *types.VirtualDisk) string {
	if b, ok := d.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
		return localPath(b.GetVirtualDeviceFileBackingInfo().FileName)
	}
	return ""
}

// imageFormat names the qemu-img format of a backing file: VMDK (sparse or descriptor) or raw.
func imageFormat(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "raw"
	}
	defer f.Close()
	head := make([]byte, 21)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if bytes.HasPrefix(head, []byte("KDMV")) || bytes.HasPrefix(head, []byte("# Disk DescriptorFile")) {
		return "vmdk"
	}
	return "raw"
}

var flatLine = regexp.MustCompile(`(?m)^RW\s+\d+\s+FLAT\s+"([^"]+)"\s+0\s*$`)

// flatExtent resolves a monolithicFlat descriptor (VMFS style: descriptor + "-flat.vmdk") to
// its one raw extent file, whose guest offsets are its file offsets.
func flatExtent(path string) (string, bool) {
	if imageFormat(path) != "vmdk" {
		return "", false
	}
	b, err := ioutil.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, []byte("# Disk DescriptorFile")) {
		return "", false
	}
	m := flatLine.FindAllSubmatch(b, -1)
	if len(m) != 1 {
		return "", false
	}
	return filepath.Join(filepath.Dir(path), string(m[0][1])), true
}

// guestView returns a raw file with the disk's guest-visible bytes and a cleanup function.
func guestView(path string) (string, func(), error) {
	if flat, ok := flatExtent(path); ok {
		return flat, func() {}, nil
	}
	if imageFormat(path) == "raw" {
		return path, func() {}, nil
	}
	tmp, err := ioutil.TempFile("", "vcsimx-*.raw")
	if err != nil {
		return "", nil, err
	}
	tmp.Close()
	cleanup := func() { os.Remove(tmp.Name()) }
	out, err := exec.Command("qemu-img", "convert", "-f", "vmdk", "-O", "raw", path, tmp.Name()).CombinedOutput()
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("qemu-img convert %s: %v: %s", path, err, out)
	}
	return tmp.Name(), cleanup, nil
}

// fingerprint hashes each 64 KiB block of the guest view; all-zero blocks hash to 0.
func fingerprint(path string, capacity int64) ([]uint64, error) {
	view, cleanup, err := guestView(path)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	f, err := os.Open(view)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n := (capacity + blockSize - 1) / blockSize
	out := make([]uint64, n)
	buf := make([]byte, blockSize)
	zero := make([]byte, blockSize)
	for i := int64(0); i < n; i++ {
		k, _ := f.ReadAt(buf, i*blockSize)
		for j := k; j < blockSize; j++ {
			buf[j] = 0
		}
		if bytes.Equal(buf, zero) {
			continue
		}
		h := fnv.New64a()
		h.Write(buf)
		out[i] = h.Sum64() | 1 // never 0, so a data block never looks like a zero block
	}
	return out, nil
}

// allocated lists the data extents of the guest view, as qemu-img map reports them
// (for a flat disk: the extent file's own allocation, as thin VMFS disks report it).
func allocated(path string, capacity int64) ([]types.DiskChangeExtent, error) {
	if flat, ok := flatExtent(path); ok {
		path = flat
	}
	if st, err := os.Stat(path); err != nil || st.Size() == 0 {
		return nil, err
	}
	out, err := exec.Command("qemu-img", "map", "--output=json", "-f", imageFormat(path), path).Output()
	if err != nil {
		return nil, fmt.Errorf("qemu-img map %s: %v", path, err)
	}
	var entries []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal(out, &entries); err != nil {
		return nil, err
	}
	var ext []types.DiskChangeExtent
	for _, e := range entries {
		if !e.Data || e.Start >= capacity {
			continue
		}
		if e.Start+e.Length > capacity {
			e.Length = capacity - e.Start
		}
		ext = appendExtent(ext, e.Start, e.Length)
	}
	return ext, nil
}

func appendExtent(ext []types.DiskChangeExtent, start, length int64) []types.DiskChangeExtent {
	if n := len(ext); n > 0 && ext[n-1].Start+ext[n-1].Length == start {
		ext[n-1].Length += length
		return ext
	}
	return append(ext, types.DiskChangeExtent{Start: start, Length: length})
}

// ---------------------------------------------------------------- changed block tracking

type snapshotPrint struct {
	file   string
	blocks []uint64
}

// tracker is a simulator registry handler: it sees every new snapshot and stamps changeIds.
type tracker struct {
	mu     sync.Mutex
	seq    int
	prints map[string]snapshotPrint
}

func (t *tracker) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VcsimxChangeTracker", Value: "tracker"}
}

func (t *tracker) UpdateObject(mo.Reference, []types.PropertyChange) {}
func (t *tracker) RemoveObject(types.ManagedObjectReference)         {}

func (t *tracker) PutObject(obj mo.Reference) {
	snap, ok := obj.(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	vm, ok := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	if !ok || vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		return
	}
	// The snapshot's config is a shallow copy of the VM's: copy disks before stamping them,
	// so that the VM and older snapshots keep their own changeIds.
	devices := make([]types.BaseVirtualDevice, len(snap.Config.Hardware.Device))
	for i, d := range snap.Config.Hardware.Device {
		devices[i] = d
		disk, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		id, err := t.record(diskPath(disk), disk.CapacityInKB*1024)
		if err != nil {
			log.Printf("change tracking: %v", err)
			continue
		}
		diskCopy, backingCopy := *disk, *backing
		backingCopy.ChangeId = id
		diskCopy.Backing = &backingCopy
		devices[i] = &diskCopy
	}
	snap.Config.Hardware.Device = devices
}

func (t *tracker) record(path string, capacity int64) (string, error) {
	blocks, err := fingerprint(path, capacity)
	if err != nil {
		return "", err
	}
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	raw[0] = 0x52
	pairs := make([]string, len(raw))
	for i, b := range raw {
		pairs[i] = hex.EncodeToString([]byte{b})
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	id := fmt.Sprintf("%s/%d", strings.Join(pairs, " "), t.seq)
	t.prints[id] = snapshotPrint{file: path, blocks: blocks}
	return id, nil
}

func (t *tracker) lookup(id string) (snapshotPrint, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.prints[id]
	return p, ok
}

// changedAreas answers QueryChangedDiskAreas for one disk of a VM (or of one of its snapshots).
func (t *tracker) changedAreas(req *types.QueryChangedDiskAreas) (*types.DiskChangeInfo, string) {
	var devices []types.BaseVirtualDevice
	if req.Snapshot != nil {
		snap, ok := simulator.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
		if !ok {
			return nil, "snapshot not found"
		}
		devices = snap.Config.Hardware.Device
	} else if vm, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine); ok {
		devices = vm.Config.Hardware.Device
	} else {
		return nil, "vm not found"
	}
	for _, disk := range disksOf(devices) {
		if disk.Key != req.DeviceKey {
			continue
		}
		path, capacity := diskPath(disk), disk.CapacityInKB*1024
		info := &types.DiskChangeInfo{StartOffset: req.StartOffset, Length: capacity - req.StartOffset}
		if req.ChangeId == "*" {
			ext, err := allocated(path, capacity)
			if err != nil {
				return nil, err.Error()
			}
			for _, e := range ext {
				if e.Start+e.Length > req.StartOffset {
					info.ChangedArea = append(info.ChangedArea, e)
				}
			}
			return info, ""
		}
		old, ok := t.lookup(req.ChangeId)
		if !ok || old.file != path {
			return nil, fmt.Sprintf("changeId %q is unknown for device %d", req.ChangeId, req.DeviceKey)
		}
		var now []uint64
		if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok && b.ChangeId != "" {
			if p, ok := t.lookup(b.ChangeId); ok {
				now = p.blocks
			}
		}
		if now == nil {
			var err error
			if now, err = fingerprint(path, capacity); err != nil {
				return nil, err.Error()
			}
		}
		for i, h := range now {
			start := int64(i) * blockSize
			if start+blockSize <= req.StartOffset {
				continue
			}
			if i >= len(old.blocks) || old.blocks[i] != h {
				length := int64(blockSize)
				if start+length > capacity {
					length = capacity - start
				}
				info.ChangedArea = appendExtent(info.ChangedArea, start, length)
			}
		}
		return info, ""
	}
	return nil, fmt.Sprintf("device %d not found", req.DeviceKey)
}

// ---------------------------------------------------------------- export leases

func exportLease(entity types.ManagedObjectReference, devices []types.BaseVirtualDevice) types.ManagedObjectReference {
	lease := &simulator.HttpNfcLease{HttpNfcLease: mo.HttpNfcLease{State: types.HttpNfcLeaseStateReady}}
	ref := simulator.Map.Put(lease).Reference()
	files := map[string]string{}
	info := &types.HttpNfcLeaseInfo{Lease: ref, Entity: entity, LeaseTimeout: 300}
	for _, d := range disksOf(devices) {
		path := diskPath(d)
		name := fmt.Sprintf("disk-%d.vmdk", d.Key)
		files[name] = path
		var size int64
		if st, err := os.Stat(path); err == nil {
			size = st.Size()
		}
		key := fmt.Sprintf("/%s/VirtualLsiLogicController0:%d", entity.Value, d.Key)
		info.DeviceUrl = append(info.DeviceUrl, types.HttpNfcLeaseDeviceUrl{
			Key: key, ImportKey: key, Url: baseURL + "/nfcx/" + ref.Value + "/" + name,
			Disk: types.NewBool(true), TargetId: name, FileSize: size,
		})
		info.TotalDiskCapacityInKB += d.CapacityInKB
	}
	leases.Store(ref.Value, files)
	lease.Info = info
	return ref
}

func serveLease(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/nfcx/"), "/")
	if len(parts) != 2 {
		http.NotFound(w, r)
		return
	}
	files, ok := leases.Load(parts[0])
	if !ok {
		http.NotFound(w, r)
		return
	}
	path, ok := files.(map[string]string)[parts[1]]
	if !ok {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	if streamNFC {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, f) // chunked: the client can't know the size up front
		return
	}
	st, _ := f.Stat()
	http.ServeContent(w, r, parts[1], st.ModTime(), f) // Range support
}

// ---------------------------------------------------------------- SOAP plumbing

func writeResult(w http.ResponseWriter, v interface{}) {
	out, err := xml.Marshal(v)
	if err != nil {
		fault(w, "InvalidArgument", err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprintf(w, envelope, out)
}

func fault(w http.ResponseWriter, kind, msg string) {
	var esc bytes.Buffer
	_ = xml.EscapeText(&esc, []byte(msg))
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, envelope, fmt.Sprintf(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode>`+
		`<faultstring>%s</faultstring><detail><%sFault xmlns="urn:vim25" xsi:type="%s"></%sFault>`+
		`</detail></soapenv:Fault>`, esc.String(), kind, kind, kind))
}

// authenticated asks the simulator itself whether the request's session cookie is valid:
// CurrentTime is refused (NotAuthenticated) without a session.
func authenticated(next http.Handler, r *http.Request) bool {
	body := fmt.Sprintf(envelope, `<CurrentTime xmlns="urn:vim25">`+
		`<_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>`)
	probe := httptest.NewRequest(http.MethodPost, "/sdk", strings.NewReader(body))
	for _, c := range r.Cookies() {
		probe.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, probe)
	return rec.Code == http.StatusOK
}

// handleSOAP answers the calls the simulator lacks; it returns false to pass a request on.
func handleSOAP(w http.ResponseWriter, body []byte, cbt *tracker) bool {
	method, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil {
		return false
	}
	switch req := method.Body.(type) {
	case *types.ExportVm:
		vm, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
		if !ok {
			fault(w, "ManagedObjectNotFound", "vm not found")
			return true
		}
		writeResult(w, struct {
			XMLName   xml.Name                     `xml:"urn:vim25 ExportVmResponse"`
			Returnval types.ManagedObjectReference `xml:"returnval"`
		}{Returnval: exportLease(req.This, vm.Config.Hardware.Device)})
	case *types.ExportSnapshot:
		snap, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachineSnapshot)
		if !ok {
			fault(w, "ManagedObjectNotFound", "snapshot not found")
			return true
		}
		writeResult(w, struct {
			XMLName   xml.Name                     `xml:"urn:vim25 ExportSnapshotResponse"`
			Returnval types.ManagedObjectReference `xml:"returnval"`
		}{Returnval: exportLease(snap.Vm, snap.Config.Hardware.Device)})
	case *types.QueryChangedDiskAreas:
		info, msg := cbt.changedAreas(req)
		if info == nil {
			fault(w, "InvalidArgument", msg)
			return true
		}
		writeResult(w, struct {
			XMLName   xml.Name             `xml:"urn:vim25 QueryChangedDiskAreasResponse"`
			Returnval types.DiskChangeInfo `xml:"returnval"`
		}{Returnval: *info})
	case *types.HttpNfcLeaseComplete:
		leases.Delete(req.This.Value)
		return false // the simulator's own handler answers
	case *types.HttpNfcLeaseAbort:
		leases.Delete(req.This.Value)
		return false
	default:
		return false
	}
	return true
}

var shimmed = [][]byte{
	[]byte("<ExportVm"), []byte("<ExportSnapshot"), []byte("<QueryChangedDiskAreas"),
	[]byte("<HttpNfcLeaseComplete"), []byte("<HttpNfcLeaseAbort"),
}

func middleware(next http.Handler, cbt *tracker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/nfcx/") {
			if !authenticated(next, r) {
				http.Error(w, "not authenticated", http.StatusUnauthorized)
				return
			}
			serveLease(w, r)
			return
		}
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/sdk") {
			body, _ := ioutil.ReadAll(r.Body)
			r.Body = ioutil.NopCloser(bytes.NewReader(body))
			for _, m := range shimmed {
				if !bytes.Contains(body, m) {
					continue
				}
				if !authenticated(next, r) {
					fault(w, "NotAuthenticated", "not authenticated")
					return
				}
				if handleSOAP(w, body, cbt) {
					return
				}
				break
			}
		}
		next.ServeHTTP(w, r)
	})
}

// markUplinks fills DVS config.uplinkPortgroup, as vCenter does (the simulator leaves it empty),
// so that clients can tell uplink portgroups (unusable by VM NICs) from VM portgroups.
func markUplinks() {
	for _, e := range simulator.Map.All("DistributedVirtualPortgroup") {
		pg := e.(*simulator.DistributedVirtualPortgroup)
		if !strings.Contains(pg.Name, "-DVUplinks") || pg.Config.DistributedVirtualSwitch == nil {
			continue
		}
		if dvs, ok := simulator.Map.Get(*pg.Config.DistributedVirtualSwitch).(*simulator.DistributedVirtualSwitch); ok {
			info := dvs.Config.GetDVSConfigInfo()
			info.UplinkPortgroup = append(info.UplinkPortgroup, pg.Self)
		}
	}
}

// toolsRunning marks every VM's VMware Tools as running (the simulator has no guest), so that
// clients take their quiesced-snapshot and guest-shutdown paths.
func toolsRunning() {
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
		vm.Guest.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
	}
}

func main() {
	addr := flag.String("l", "127.0.0.1:0", "listen address (port 0 picks a free port)")
	vms := flag.Int("vm", 2, "VMs per host/cluster")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate")
	flag.BoolVar(&streamNFC, "nfc-stream", false, "serve lease disks as a stream, ignoring Range")
	tools := flag.Bool("tools", false, "report VMware Tools as running in every VM")
	user := flag.String("user", "", "the only accepted user (password from $VCSIMX_PASSWORD); default: any")
	flag.Parse()

	model := simulator.VPX()
	model.Machine = *vms
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	model.Service.Listen = &url.URL{Host: *addr}
	if *user != "" {
		model.Service.Listen.User = url.UserPassword(*user, os.Getenv("VCSIMX_PASSWORD"))
	}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	markUplinks()
	if *tools {
		toolsRunning()
	}
	cbt := &tracker{prints: map[string]snapshotPrint{}}
	simulator.Map.AddHandler(cbt)

	s := model.Service.NewServer()
	baseURL = s.URL.Scheme + "://" + s.URL.Host
	s.Config.Handler = middleware(s.Config.Handler, cbt)

	shown := *s.URL
	shown.User = nil // never print the password
	fmt.Printf("VCSIMX_URL %s\n", shown.String())

	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
	s.Close()
	model.Remove()
}
